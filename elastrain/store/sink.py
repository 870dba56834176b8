"""A job's records pushed into the store as they happen, from wherever its driver runs.

The server hands a `StoreSink` to each job's driver; the driver's runner calls it beside writing
its run folder, so the store learns what a job did without anyone reading the job's files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from elastrain.store.db import connect
from elastrain.store.repository import Store

log = logging.getLogger("elastrain.store")


@dataclass(frozen=True)
class StoreSink:
    """Records one job's events and metric points in the store at `db_url`.

    It is made where the job is submitted and used in the job's driver (a picklable value: the
    connection is opened on first use, in the driver's process). A write that fails is logged
    and dropped: the store is the job's second record (its run folder is the first), and the job
    must not fail because the database hiccupped.

    Attributes:
        db_url: the store's SQLAlchemy URL (password included).
        job_id: the job the records belong to (already in the store).
    """

    db_url: str
    job_id: str

    @cached_property
    def _store(self) -> Store:
        return Store(connect(self.db_url, migrate=False))

    def events(self, events: list[dict]) -> None:
        """Add events (as `elastic.events.Event` writes them); a checkpoint event also records
        its checkpoint (`detail`: path, sha256, bytes)."""
        try:
            self._store.add_events(self.job_id, events)
            for event in (e for e in events if e["kind"] == "checkpoint"):
                detail = event["detail"]
                self._store.add_checkpoint(self.job_id, event["step"], detail["path"], detail["sha256"],
                                           detail["bytes"])
        except Exception:   # see the class docstring
            log.exception("could not record %d event(s) of job %s in the store", len(events), self.job_id)

    def metrics(self, points: list[dict]) -> None:
        """Add metric points ({name, step, epoch, value, t})."""
        try:
            self._store.add_metrics(self.job_id, points)
        except Exception:   # see the class docstring
            log.exception("could not record %d metric point(s) of job %s in the store", len(points), self.job_id)
