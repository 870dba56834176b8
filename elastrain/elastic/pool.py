"""Loaded worker processes that outlive the job they trained, for the next job driven from the
same process (a study's trials): a job takes one in a fraction of a second, where a new process
takes seconds to start and import torch."""

from __future__ import annotations

import threading
from typing import Any


class WorkerPool:
    """Idle `Worker` actors that hold no CPU (a job reserves its CPUs beside them, as it does for
    warm standbys), shared by the jobs of one process; thread-safe.

    A job gives a worker back only after it has left the job's group; the next job loads its own
    spec into it (`Worker.reload`).
    """

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.closed = False

    def take(self) -> Any | None:
        """An idle worker's actor handle, or None when there is none."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give(self, actor: Any) -> bool:
        """Keep `actor` for the next job; False (and the caller kills it) once the pool is closed."""
        with self._lock:
            if self.closed:
                return False
            self._idle.append(actor)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """End every idle worker's process; workers given back later are refused."""
        import ray

        with self._lock:
            self.closed, idle, self._idle = True, self._idle, []
        for actor in idle:
            ray.kill(actor)
