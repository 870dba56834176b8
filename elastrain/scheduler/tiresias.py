"""Tiresias (Gu et al., NSDI'19): discretized two-queue least-attained-service, gang scheduled.

Jobs that have received less than `threshold_s` GPU-seconds of service sit in the high-priority
queue, the rest in the low one; within a queue the earliest arrival goes first. Each job runs at
exactly its requested size or not at all; a job that does not fit is passed over for smaller ones
behind it, and a running job that loses its place is preempted.
"""

from __future__ import annotations

from collections.abc import Sequence

from elastrain.scheduler.types import Allocation, Cluster, JobDemand


class Tiresias:
    """The discretized 2D-LAS baseline.

    Args:
        threshold_s: attained service (worker-seconds) that moves a job to the low queue; the
            default, 16 GPU-hours, reproduces the published Tiresias figures of the Pollux traces.
        starvation_factor: a job that has waited this many times its run time so far is promoted
            back to the high queue (Tiresias' STARVELIMIT); 0 turns promotion off.
    """

    def __init__(self, threshold_s: float = 16 * 3600.0, starvation_factor: float = 0.0) -> None:
        self.threshold_s = threshold_s
        self.starvation_factor = starvation_factor

    def queue(self, now: float, job: JobDemand) -> int:
        """0 (high priority) or 1 (low)."""
        if job.attained_s < self.threshold_s:
            return 0
        if self.starvation_factor > 0 and job.current == 0:
            ran_s = job.attained_s / max(job.gang_size, 1)
            waited_s = now - job.submitted_s - ran_s
            if waited_s >= self.starvation_factor * ran_s:
                return 0
        return 1

    def allocate(self, now: float, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """See the class docstring."""
        ordered = sorted(jobs, key=lambda job: (self.queue(now, job), job.submitted_s, job.seq))
        free = cluster.slots
        workers: dict[str, int] = {}
        for job in ordered:
            need = job.gang_size * job.slots_per_worker
            if need <= free + 1e-9:
                workers[job.job_id] = job.gang_size
                free -= need
        return Allocation(workers, nodes=cluster.held_nodes())
