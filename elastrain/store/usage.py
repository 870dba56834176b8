"""What jobs have used: worker-seconds, integrated from their events (each event carries the group's
size after it), so that a finished job's figure comes from the store alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from elastrain.store.repository import JobInfo, Store
from elastrain.store.schema import JobEvent


def worker_seconds(sizes: Sequence[tuple[float, int]], end: float) -> float:
    """Worker-seconds of a job whose group had `sizes[i][1]` workers from time `sizes[i][0]` (epoch
    seconds, ascending) until the next entry, and the last size until `end`."""
    ends = [t for t, _ in sizes[1:]] + [end]
    return sum(workers * max(0.0, min(after, end) - t) for (t, workers), after in zip(sizes, ends, strict=False))


def jobs_worker_seconds(store: Store, jobs: Iterable[JobInfo], now: float) -> dict[str, float]:
    """Worker-seconds of each of `jobs` until it finished, or until `now` if it has not."""
    by_seq = {job.seq: job for job in jobs}
    sizes: dict[int, list[tuple[float, int]]] = {seq: [] for seq in by_seq}
    with store.session() as session:
        rows = session.execute(select(JobEvent.job_seq, JobEvent.t, JobEvent.workers)
                               .where(JobEvent.job_seq.in_(by_seq)).order_by(JobEvent.job_seq, JobEvent.t, JobEvent.id))
        for seq, t, workers in rows:
            sizes[seq].append((t, workers))
    return {job.job_id: worker_seconds(sizes[seq], _epoch(job.finished_at) if job.finished_at else now)
            for seq, job in by_seq.items()}


def _epoch(moment: datetime) -> float:
    """Epoch seconds of `moment` (SQLite hands back UTC times without their zone)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
