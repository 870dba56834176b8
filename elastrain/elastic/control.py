"""Requests to a running job from outside its driver: cancel it, resize it, or interrupt it.

The server's loop and the CLI's signal handlers hold a job's `JobControl` and call it; a second
terminal (`elastrain scale`) drops a request file into the run folder, which the job's control
reads too once it follows that folder. A request never depends on how far the job has got: one
made before the job has started is kept until the driver asks for it. The calls only set flags,
so they are safe in a signal handler.
"""

from __future__ import annotations

import threading

from elastrain.runs import RunFolder


class JobControl:
    """The pending requests of one job; thread-safe."""

    def __init__(self) -> None:
        self.folder: RunFolder | None = None
        self._lock = threading.Lock()
        self._cancel = False
        self._interrupt = False
        self._workers: int | None = None

    def follow(self, folder: RunFolder) -> None:
        """Count the requests other processes drop into the job's run folder as requests too."""
        self.folder = folder

    def cancel(self) -> None:
        """Ask the job to stop after its current step and end as cancelled."""
        with self._lock:
            self._cancel = True

    def interrupt(self) -> None:
        """Ask the job to stop after its current step without ending: its driver is shutting
        down, and the job resumes from its checkpoints under the next one."""
        with self._lock:
            self._interrupt = True

    def interrupt_requested(self) -> bool:
        """Whether the job was asked to stop for its driver's shutdown."""
        with self._lock:
            return self._interrupt

    def scale(self, workers: int) -> None:
        """Ask the job to run on `workers` workers (the latest request wins)."""
        with self._lock:
            self._workers = workers

    def cancel_requested(self) -> bool:
        """Whether the job was asked to cancel."""
        with self._lock:
            if self._cancel:
                return True
        return self.folder is not None and self.folder.cancel_requested()

    def take_scale(self) -> int | None:
        """The worker count asked for since the last call, if any (the request is consumed)."""
        with self._lock:
            workers, self._workers = self._workers, None
        if self.folder is not None:
            workers = self.folder.take_scale_request() or workers
        return workers
