"""A job's structured events: membership changes, recoveries, checkpoints, each with its duration.

They are appended to the run folder (see `RunFolder`), so `elastrain status` can read them from
any process, and echoed to the job's human-readable log.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from elastrain.elastic.run_folder import RunFolder


@dataclass
class Event:
    """Something that happened to a job, and how long it took."""

    kind: str                 # start, waiting, scale_out, scale_in, worker_lost, recovered, checkpoint, resume, ...
    step: int
    workers: int
    generation: int
    duration_s: float | None = None
    detail: dict = field(default_factory=dict)
    t: float = field(default_factory=time.time)


class EventLog:
    """Appends a job's events to its run folder and keeps them in memory."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.events: list[Event] = [Event(**e) for e in folder.read_events()]

    def add(self, event: Event) -> Event:
        """Record `event` (durably: one flushed line)."""
        self.events.append(event)
        self.folder.append_event(asdict(event))
        took = "" if event.duration_s is None else f" took {event.duration_s:.3f} s"
        detail = "".join(f" {k}={v}" for k, v in event.detail.items())
        self.folder.log(f"{event.kind} at step {event.step}, {event.workers} worker(s){took}{detail}")
        return event
