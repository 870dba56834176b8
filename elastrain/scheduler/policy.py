"""The policy interface and the first-come-first-served policy.

A policy is a pure function of plain data: the same object runs in the live server and in the
simulator (invariant 4 of docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from elastrain.scheduler.types import Allocation, Cluster, JobDemand


class Policy(Protocol):
    """Decides how many workers each job runs on, its batch size, and the nodes to rent."""

    def allocate(self, now: float, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """The allocation for `jobs` on `cluster` at time `now` (seconds); never more slots than
        the cluster holds, and a running job below its `min_workers` only by being stopped."""


class FifoPacking:
    """First come, first served.

    Queued jobs start in submission order while they fit; a job that does not fit holds back
    the ones behind it (the queue keeps its order). Running jobs keep their place in the order;
    one that no longer fits (the cluster shrank) is stopped.

    Args:
        as_requested: run each job at exactly its requested size (gang, the classic baseline);
            otherwise a job starts at its minimum and spare capacity tops jobs up toward their
            maximum, oldest first.
    """

    def __init__(self, as_requested: bool = False) -> None:
        self.as_requested = as_requested

    def allocate(self, now: float, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """See the class docstring."""
        ordered = sorted(jobs, key=lambda job: job.seq)
        free = cluster.slots
        workers: dict[str, int] = {}
        for job in (j for j in ordered if j.current > 0):
            need = self._start_size(job) * job.slots_per_worker
            if need <= free + 1e-9:
                workers[job.job_id] = self._start_size(job)
                free -= need
        for job in (j for j in ordered if j.current == 0):
            need = self._start_size(job) * job.slots_per_worker
            if need > free + 1e-9:
                break
            workers[job.job_id] = self._start_size(job)
            free -= need
        if not self.as_requested:
            for job in ordered:
                if job.job_id not in workers:
                    continue
                extra = min(job.max_workers - workers[job.job_id], int((free + 1e-9) // job.slots_per_worker))
                if extra > 0:
                    workers[job.job_id] += extra
                    free -= extra * job.slots_per_worker
        return Allocation(workers, nodes=cluster.held_nodes())

    def _start_size(self, job: JobDemand) -> int:
        return job.gang_size if self.as_requested else job.min_workers
