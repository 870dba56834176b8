"""The goodput policy: workers and batch size per job, and the nodes to rent.

Learned from Pollux (Qiao et al., OSDI'21): a job's useful speed (goodput) is its throughput
(fitted from the step times it has shown, `throughput.py`) times the statistical efficiency of its
batch size (from its gradient noise, `efficiency.py`), and the scheduler picks the batch size
together with the number of workers. Where Pollux maximises a fairness-weighted mean of speedups,
this policy aims at the mean job completion time: it maximises the sum over jobs of one over
the time each would still need at its allocation (remaining work / goodput, plus the
re-allocation penalty where the allocation changes), so short jobs and jobs that scale well come
first, the way shortest-remaining-time-first minimises mean completion time on one machine.
Nodes are requested for the capacity whose marginal speedup is worth its price, cheapest (spot)
first: cheap capacity is rented for smaller gains than dear capacity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from elastrain.scheduler.efficiency import GradientNoise, gain
from elastrain.scheduler.nodes import plan_for_gains
from elastrain.scheduler.throughput import step_time
from elastrain.scheduler.types import Allocation, Cluster, JobDemand

# Weight of a job whose remaining work is unknown: as if it had this many seconds left on one worker.
_UNKNOWN_REMAINING_S = 3600.0


@dataclass(frozen=True)
class SpeedCurve:
    """A job's best progress rate (initial-batch steps per second) and batch size per worker
    count; index k is k workers, entries that cannot run are -inf."""

    rates: np.ndarray
    batches: np.ndarray


class GoodputPolicy:
    """See the module docstring.

    Args:
        restart_penalty_s: seconds a job makes no progress when its allocation changes.
        restart_weight: a re-allocation counts as this many penalties when deciding: besides the
            job's own pause, a resized job tends to be resized again and its slots idle meanwhile
            (4 was best on the Pollux workloads 1-8; see docs/benchmarks.md).
        growth: a job runs on at most this many times the most workers it has been seen on
            (the fitted model is not trusted far beyond what was observed).
        batch_candidates: global batch sizes tried between the initial and the largest.
        min_speedup_per_slot: a slot of the dearest pool is rented only when it adds at least this
            much speedup (in single-worker units) to some job; a slot of a cheaper pool when it adds
            this times its price relative to the dearest (spot at a third of the price: a third).
        budget_per_hour: the most the rented nodes may cost per hour (None: no limit).
        autoscale: request nodes (False: keep the nodes held, as on a fixed cluster).
    """

    def __init__(self, restart_penalty_s: float = 30.0, restart_weight: float = 4.0, growth: float = 2.0,
                 batch_candidates: int = 16, min_speedup_per_slot: float = 0.5,
                 budget_per_hour: float | None = None, autoscale: bool = True) -> None:
        self.restart_penalty_s = restart_penalty_s
        self.restart_weight = restart_weight
        self.growth = growth
        self.batch_candidates = batch_candidates
        self.min_speedup_per_slot = min_speedup_per_slot
        self.budget_per_hour = budget_per_hour
        self.autoscale = autoscale

    def curve(self, job: JobDemand, slots_per_node: float) -> SpeedCurve:
        """The job's best rate and batch size for 0..K workers (K: what it may run on)."""
        if job.speed is None:   # never observed: one worker, to measure it
            top = max(min(1, job.max_workers), job.min_workers)
            counts = np.arange(top + 1)
            rates = np.where((counts >= job.min_workers) | (counts == 0), counts.astype(float), -np.inf)
            return SpeedCurve(rates, np.full(top + 1, job.batch_size or 0))
        top = job.max_workers
        if job.max_workers_seen > 0:
            top = min(top, max(job.min_workers, math.ceil(self.growth * job.max_workers_seen)))
        workers = np.arange(1, top + 1)
        nodes = np.ceil(workers * job.slots_per_worker / slots_per_node)
        if job.batch is None:
            batch = job.batch_size or 1
            seconds = step_time(job.speed, nodes, workers, batch / workers)
            rates = 1.0 / seconds
            batches = np.full(top, batch)
        else:
            limits = job.batch
            sizes = np.unique(np.round(np.geomspace(limits.initial, limits.maximum, self.batch_candidates)))
            local = sizes[None, :] / workers[:, None]
            accumulation = np.ceil(local / limits.max_local) - 1
            micro = local / (accumulation + 1)
            seconds = step_time(job.speed, nodes[:, None], workers[:, None], micro, accumulation)
            noise = job.noise or GradientNoise(0.0, 0.0)
            table = gain(noise, sizes / limits.initial)[None, :] / seconds
            table = np.where(local >= limits.min_local, table, -np.inf)
            best = table.argmax(axis=1)
            rates = table[np.arange(top), best]
            batches = sizes[best].astype(int)
        rates = np.where(workers >= job.min_workers, rates, -np.inf)
        return SpeedCurve(np.concatenate([[0.0], rates]), np.concatenate([[0], batches]))

    def allocate(self, now: float, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """See the class docstring."""
        per_node = cluster.slots_per_node
        curves = {job.job_id: self.curve(job, per_node) for job in jobs}
        values = {job.job_id: self._values(job, curves[job.job_id]) for job in jobs}
        slots = {job.job_id: job.slots_per_worker for job in jobs}
        workers = _greedy(values, slots, cluster.slots)
        batch_size = {job_id: int(curves[job_id].batches[k]) for job_id, k in workers.items()
                      if curves[job_id].batches[k] > 0}
        return Allocation(workers, batch_size, self._nodes(cluster, jobs, curves))

    def _values(self, job: JobDemand, curve: SpeedCurve) -> np.ndarray:
        """Worth of each worker count: one over the time the job would take to finish there,
        counting the re-allocation (weighted) where the count differs from what it holds."""
        finite = curve.rates[1:][np.isfinite(curve.rates[1:])]
        if job.remaining is None or job.speed is None:
            work = _UNKNOWN_REMAINING_S * (finite.max() if finite.size else 1.0)
        else:
            work = max(job.remaining, 1e-9)
        usable = np.isfinite(curve.rates) & (curve.rates > 0)
        finish = np.where(usable, work / np.where(usable, curve.rates, 1.0), np.inf)
        penalty = np.full(curve.rates.shape, self.restart_weight * self.restart_penalty_s)
        if 0 < job.current < len(penalty):
            penalty[job.current] = 0.0
        values = np.where(usable, 1.0 / (finish + penalty), 0.0)
        return np.where(np.isfinite(curve.rates), values, -np.inf)

    def _nodes(self, cluster: Cluster, jobs: Sequence[JobDemand], curves: dict[str, SpeedCurve]) -> dict[str, int]:
        """Nodes to rent: the slots whose marginal speedup is worth their price (`plan_for_gains`)."""
        if not self.autoscale:
            return cluster.held_nodes()
        gains = []
        for job in jobs:
            rates = curves[job.job_id].rates
            base = rates[1:][np.isfinite(rates[1:])]
            if not base.size:
                continue
            speedups = np.where(np.isfinite(rates), rates / base[0], -np.inf)
            for k, k_next, gained in _hull_segments(speedups):
                slots = (k_next - k) * job.slots_per_worker
                gains.append((gained / slots, slots))
        return plan_for_gains(cluster.pools, gains, self.min_speedup_per_slot, self.budget_per_hour, cluster.max_nodes)


def _hull_segments(values: np.ndarray) -> list[tuple[int, int, float]]:
    """The rising part of the upper concave hull of (k, values[k]) from (0, values[0]), as
    segments (from k, to k, value gained), steepest first."""
    points = [(k, float(v)) for k, v in enumerate(values) if np.isfinite(v)]
    if not points or points[0][0] != 0:
        points = [(0, 0.0)] + [p for p in points if p[0] > 0]
    hull: list[tuple[int, float]] = []
    for point in points:
        while len(hull) >= 2:
            (k1, v1), (k2, v2) = hull[-2], hull[-1]
            if (v2 - v1) * (point[0] - k1) <= (point[1] - v1) * (k2 - k1):
                hull.pop()
            else:
                break
        hull.append(point)
    return [(k1, k2, v2 - v1) for (k1, v1), (k2, v2) in itertools.pairwise(hull) if v2 > v1]


def _greedy(values: dict[str, np.ndarray], slots: dict[str, float], capacity: float) -> dict[str, int]:
    """Worker counts that approximately maximise the sum of values within `capacity`: hull
    segments taken steepest-per-slot first; leftover capacity then buys the best point a job can
    still reach."""
    segments = []
    for job_id, job_values in values.items():
        for k1, k2, gained in _hull_segments(job_values):
            segments.append((gained / ((k2 - k1) * slots[job_id]), job_id, k1, k2))
    segments.sort(key=lambda s: (-s[0], s[1]))
    level = dict.fromkeys(values, 0)
    blocked: set[str] = set()
    free = capacity
    for _, job_id, k1, k2 in segments:
        need = (k2 - k1) * slots[job_id]
        if job_id in blocked or level[job_id] != k1:
            continue
        if need > free + 1e-9:
            blocked.add(job_id)
            continue
        level[job_id] = k2
        free -= need
    for job_id in sorted(blocked, key=lambda j: (-float(values[j][level[j]]) if level[j] else 0.0, j)):
        job_values = values[job_id]
        reach = min(len(job_values) - 1, level[job_id] + int((free + 1e-9) // slots[job_id]))
        if reach <= level[job_id]:
            continue
        best = level[job_id] + 1 + int(np.argmax(job_values[level[job_id] + 1:reach + 1]))
        if job_values[best] > job_values[level[job_id]]:
            free -= (best - level[job_id]) * slots[job_id]
            level[job_id] = best
    return {job_id: k for job_id, k in level.items() if k > 0}
