"""A job's structured events: membership changes, recoveries, checkpoints, each with its duration.

They are appended to the run folder (see `RunFolder`), so `elastrain status` can read them from
any process, echoed to the job's human-readable log, and pushed to the job's `RecordSink` if it
has one (the server's store).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

from elastrain.runs import RunFolder


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


class RecordSink(Protocol):
    """Where a job's records go besides its run folder, as they happen (`store.StoreSink`)."""

    def events(self, events: list[dict]) -> None:
        """Events, as `Event` dicts."""

    def metrics(self, points: list[dict]) -> None:
        """Metric points: {name, step, epoch, value, t}."""


class EventLog:
    """Appends a job's events to its run folder (and its sink) and keeps them in memory."""

    def __init__(self, folder: RunFolder, sink: RecordSink | None = None) -> None:
        self.folder = folder
        self.sink = sink
        self.events: list[Event] = [Event(**e) for e in folder.read_events()]   # not sent again

    def add(self, event: Event) -> Event:
        """Record `event` (durably: one flushed line)."""
        self.events.append(event)
        record = asdict(event)
        self.folder.append_event(record)
        if self.sink is not None:
            self.sink.events([record])
        took = "" if event.duration_s is None else f" took {event.duration_s:.3f} s"
        detail = "".join(f" {k}={v}" for k, v in event.detail.items())
        self.folder.log(f"{event.kind} at step {event.step}, {event.workers} worker(s){took}{detail}")
        return event
