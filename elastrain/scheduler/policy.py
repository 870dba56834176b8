"""The policy interface and the first policy: first come, first served, packed.

A policy is a pure function of plain data: the same object runs in the live server and in the
simulator (invariant 4 of ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JobDemand:
    """What a job asks for and holds now (`current` 0: queued)."""

    job_id: str
    seq: int                  # submission order
    min_workers: int
    max_workers: int
    cpus_per_worker: float
    current: int = 0


@dataclass(frozen=True)
class Cluster:
    """Capacity the jobs share."""

    cpus: float


@dataclass(frozen=True)
class Allocation:
    """Workers per job; a job absent or at 0 stays queued (or, if running, is stopped)."""

    workers: dict[str, int]


class Policy(Protocol):
    """Decides how many workers each job runs on."""

    def allocate(self, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """The allocation for `jobs` on `cluster`; never below a running job's `min_workers`
        unless the cluster shrank under it."""


class FifoPacking:
    """Running jobs keep their minimum; queued jobs start in submission order while their minimum
    fits (a job that does not fit holds back the ones behind it: the queue keeps its order); spare
    capacity then tops jobs up toward their maximum, oldest first."""

    def allocate(self, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """See the class docstring."""
        ordered = sorted(jobs, key=lambda job: job.seq)
        free = cluster.cpus
        workers: dict[str, int] = {}
        for job in (j for j in ordered if j.current > 0):
            workers[job.job_id] = job.min_workers
            free -= job.min_workers * job.cpus_per_worker
        for job in (j for j in ordered if j.current == 0):
            need = job.min_workers * job.cpus_per_worker
            if need > free + 1e-9:
                break
            workers[job.job_id] = job.min_workers
            free -= need
        for job in ordered:
            if job.job_id not in workers:
                continue
            extra = min(job.max_workers - workers[job.job_id], int((free + 1e-9) // job.cpus_per_worker))
            if extra > 0:
                workers[job.job_id] += extra
                free -= extra * job.cpus_per_worker
        return Allocation(workers)
