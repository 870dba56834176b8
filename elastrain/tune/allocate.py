"""How a study's workers are shared among its trials: a pure function over plain data.

The study asks the same scheduler policy as the server (`elastrain.scheduler`): each running
trial is a job holding workers, and each trial the study may still start is a queued job behind
them. Trials start at `workers.min`; when a trial ends, the policy gives its workers to queued
trials first and, when none may start, to the running ones (a resize in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from elastrain.scheduler.policy import Policy
from elastrain.scheduler.types import Cluster, JobDemand


@dataclass(frozen=True)
class RunningTrial:
    """A trial as the allocation sees it: its job, its size range, the workers it holds now."""

    job_id: str
    number: int
    min_workers: int
    max_workers: int
    workers: int


@dataclass(frozen=True)
class TrialPlan:
    """What the study does now: resize running trials (`resize`: job id -> workers), and start
    `len(start)` new trials with `start[i]` workers each."""

    resize: dict[str, int]
    start: tuple[int, ...]


def plan_trials(policy: Policy, slots: float, running: Sequence[RunningTrial], may_start: int,
                min_workers: int, max_workers: int, slots_per_worker: float, now: float = 0.0) -> TrialPlan:
    """The allocation `policy` makes for the running trials and up to `may_start` new ones (each
    trial `min_workers`..`max_workers` workers of `slots_per_worker` slots) on `slots` slots.

    A running trial absent from the policy's answer keeps its workers (the study never stops a
    trial to make room: it is pruned or finishes).
    """
    order = len(running) and max(trial.number for trial in running) + 1
    demands = [JobDemand(trial.job_id, trial.number, trial.min_workers, trial.max_workers, slots_per_worker,
                         current=trial.workers) for trial in running]
    queued = [JobDemand(f"queued-{i}", order + i, min_workers, max_workers, slots_per_worker)
              for i in range(may_start)]
    allocation = policy.allocate(now, Cluster.single(slots), [*demands, *queued])
    resize = {trial.job_id: allocation.workers[trial.job_id] for trial in running
              if allocation.workers.get(trial.job_id, 0) > 0 and allocation.workers[trial.job_id] != trial.workers}
    start = tuple(allocation.workers[job.job_id] for job in queued if allocation.workers.get(job.job_id, 0) > 0)
    return TrialPlan(resize, start)
