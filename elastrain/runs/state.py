"""A job's lifecycle: the one vocabulary of job states that the driver, the store, the API, the
CLI, the SDK and studies share.

`JobState` is a `StrEnum`: each state is equal to its string, which is what JSON, the database and
the dashboard read and write, so records written before it existed read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life.

    A job on a server is QUEUED until the scheduler starts it. Its driver says STARTING while it
    prepares the job and starts the workers, RUNNING while the group trains, and WAITING while the
    workers it needs wait for resources. It ends SUCCEEDED, FAILED or CANCELLED (`is_final`).
    INTERRUPTED: its driver was stopped (a shutdown, Ctrl-C) and `elastrain resume` or the next
    server continues it. LOST and UNKNOWN are what a reader of this machine's run folder
    concludes: the job's driver is gone without having ended it, or it wrote no status yet.
    """

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting for resources"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    # The hint is part of the state's string: `elastrain status` has always shown it so.
    LOST = "lost (driver gone; `elastrain resume` continues it)"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """Whether the job has ended (SUCCEEDED, FAILED or CANCELLED): nothing changes it any more."""
        return self in ENDED

    @property
    def is_stopped(self) -> bool:
        """Whether nothing drives the job now: it ended, or its driver stopped or is gone (a job
        INTERRUPTED or LOST may be resumed)."""
        return self.is_final or self in (JobState.INTERRUPTED, JobState.LOST)


ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})   # the states a job ends in
