"""A job's structured events (membership changes, recoveries, checkpoints) and its live status.

Both live in the run directory: `events.jsonl` (one event per line, appended) and
`status.json` (replaced atomically), so `elastrain status` can read them from any process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
SCALE_REQUEST_FILE = "scale-request.json"
CANCEL_REQUEST_FILE = "cancel-request.json"
LOG_FILE = "job.log"


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
    """Appends a job's events to its run directory and keeps them in memory."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EVENTS_FILE
        self.run_dir = run_dir
        self.events: list[Event] = [Event(**e) for e in read_events(run_dir)]

    def add(self, event: Event) -> Event:
        """Record `event` (durably: one flushed line)."""
        self.events.append(event)
        with self.path.open("a") as handle:
            handle.write(json.dumps(asdict(event)) + "\n")
        took = "" if event.duration_s is None else f" took {event.duration_s:.3f} s"
        detail = "".join(f" {k}={v}" for k, v in event.detail.items())
        append_log(self.run_dir, f"{event.kind} at step {event.step}, {event.workers} worker(s){took}{detail}")
        return event


def append_log(run_dir: Path, line: str) -> None:
    """Add a timestamped line to the job's human-readable log (`elastrain logs`)."""
    with (run_dir / LOG_FILE).open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def read_events(run_dir: Path) -> list[dict]:
    """The events recorded for a job, oldest first (a torn last line is ignored)."""
    path = run_dir / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def write_json_atomic(path: Path, value: dict) -> None:
    """Replace `path` with `value` as JSON, so that readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
