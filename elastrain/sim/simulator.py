"""A trace-driven cluster simulator: jobs of a workload arrive, a policy decides every round, and
each job progresses as its application's trace says it would where it was placed.

Rounds follow the Pollux artifact's setting (README of the traces): every `round_s` the policy
sees the cluster and the jobs and returns an allocation; a job whose placement changes makes no
progress for `restart_penalty_s`; nodes a policy asks for arrive at the next round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from elastrain.scheduler.policy import Policy
from elastrain.scheduler.throughput import StepObservation, ThroughputParams, fit_throughput
from elastrain.scheduler.types import BatchLimits, Cluster, JobDemand, NodePool
from elastrain.sim.apps import AppModel
from elastrain.sim.placement import place
from elastrain.sim.traces import Submission


@dataclass(frozen=True)
class PoolConfig:
    """A kind of node the simulated cluster may rent.

    Attributes:
        name: its name ("on-demand", "spot").
        max_nodes: the most nodes of this kind the cluster may hold.
        price_per_hour: cost of one node-hour.
        spot: whether the provider takes nodes back when `availability` drops.
        initial_nodes: nodes held at the start.
        availability: for spot pools, nodes on offer at time t (seconds); None: always max_nodes.
    """

    name: str
    max_nodes: int
    price_per_hour: float = 0.0
    spot: bool = False
    initial_nodes: int = 0
    availability: Callable[[float], int] | None = None

    def offered(self, t: float) -> int:
        """Nodes of this kind that can be held at time t."""
        if self.availability is None:
            return self.max_nodes
        return min(self.max_nodes, self.availability(t))


@dataclass(frozen=True)
class SimConfig:
    """How the simulated cluster behaves."""

    pools: tuple[PoolConfig, ...]
    gpus_per_node: int = 4
    round_s: float = 60.0
    restart_penalty_s: float = 30.0
    adaptive_batch: bool = False      # jobs let the policy choose their batch size
    max_nodes: int | None = None      # the most nodes all pools together may hold
    max_hours: float = 24.0 * 14      # give up after this much simulated time


@dataclass
class _Job:
    submission: Submission
    app: AppModel
    seq: int
    batch: int
    progress: float = 0.0
    attained_s: float = 0.0
    counts: dict[int, int] = field(default_factory=dict)   # node index -> workers there
    started_s: float | None = None
    finished_s: float | None = None
    restarts: int = 0
    penalty_s: float = 0.0       # seconds without progress still owed for the last re-allocation
    max_seen: int = 0
    observations: dict[tuple, StepObservation] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return sum(self.counts.values())

    def placement(self) -> tuple[int, ...]:
        return tuple(self.counts[n] for n in sorted(self.counts))


@dataclass
class SimResult:
    """What happened: per-job times and a per-round timeline."""

    jobs: list[dict]
    timeline: list[dict]
    cost: float
    unfinished: int

    @property
    def mean_jct_s(self) -> float:
        """Average job completion time of the finished jobs."""
        done = [j["jct_s"] for j in self.jobs if j["jct_s"] is not None]
        return sum(done) / len(done) if done else math.nan


class Simulator:
    """Replays `submissions` under `policy` (see the module docstring)."""

    def __init__(self, submissions: list[Submission], apps: dict[str, AppModel], policy: Policy,
                 config: SimConfig) -> None:
        unknown = sorted({s.application for s in submissions} - set(apps))
        if unknown:
            raise ValueError(f"no trace for application(s) {', '.join(unknown)}")
        self.policy = policy
        self.config = config
        self.jobs = [_Job(s, apps[s.application], i, s.batch_size) for i, s in enumerate(submissions)]
        self.nodes = {pool.name: min(pool.initial_nodes, pool.offered(0.0)) for pool in config.pools}
        self._fits: dict[frozenset, ThroughputParams] = {}

    def run(self, progress: Callable[[float, int], None] | None = None) -> SimResult:
        """Simulate until every job has finished (or `max_hours` passed); `progress(t, done)` is
        called every round."""
        cfg = self.config
        t = 0.0
        timeline = []
        cost = 0.0
        pending = sorted(self.jobs, key=lambda j: j.submission.time)
        while any(j.finished_s is None for j in self.jobs) and t <= cfg.max_hours * 3600:
            active = [j for j in pending if j.submission.time <= t and j.finished_s is None]
            layout = self._layout(t)
            self._drop_lost_nodes(active, layout)
            cluster = Cluster(tuple(NodePool(p.name, cfg.gpus_per_node, self.nodes[p.name], p.offered(t),
                                             p.price_per_hour, p.spot) for p in cfg.pools), cfg.max_nodes)
            decision = self.policy.allocate(t, cluster, [self._demand(j) for j in active])
            self._apply(t, active, layout, decision.workers, decision.batch_size)
            self._advance(t, active)
            round_cost = sum(self.nodes[p.name] * p.price_per_hour for p in cfg.pools) * cfg.round_s / 3600
            cost += round_cost
            timeline.append({"t": t, "gpus_used": sum(j.workers for j in active),
                             "jobs_running": sum(1 for j in active if j.workers),
                             "jobs_waiting": sum(1 for j in active if not j.workers and j.finished_s is None),
                             "nodes": dict(self.nodes), "cost": cost})
            self._rent(t, decision.nodes)
            t += cfg.round_s
            if progress:
                progress(t, sum(1 for j in self.jobs if j.finished_s is not None))
        jobs = [{"name": j.submission.name, "application": j.app.name, "submit_s": j.submission.time,
                 "start_s": j.started_s, "finish_s": j.finished_s, "restarts": j.restarts,
                 "jct_s": None if j.finished_s is None else j.finished_s - j.submission.time}
                for j in self.jobs]
        return SimResult(jobs, timeline, cost, sum(1 for j in self.jobs if j.finished_s is None))

    def _layout(self, t: float) -> list[int]:
        """Node index -> GPUs it has; node indices are stable per pool (pool order, then node)."""
        per_pool = max(p.max_nodes for p in self.config.pools)
        capacity = []
        for pool in self.config.pools:
            held = self.nodes[pool.name]
            capacity += [self.config.gpus_per_node if n < held else 0 for n in range(per_pool)]
        return capacity

    def _drop_lost_nodes(self, active: list[_Job], layout: list[int]) -> None:
        """Jobs with workers on nodes that are gone stop (they restart wherever the policy says)."""
        for job in active:
            if any(layout[n] == 0 for n in job.counts):
                job.counts = {}

    def _demand(self, job: _Job) -> JobDemand:
        cfg = self.config
        app = job.app
        batch = None
        if cfg.adaptive_batch:
            batch = BatchLimits(app.initial_batch, app.max_batch, app.max_local, app.min_local)
        speed = self._fit(job)
        noise = app.noise(job.progress, job.batch) if speed is not None else None
        top = cfg.gpus_per_node * sum(p.max_nodes for p in cfg.pools)
        return JobDemand(job.submission.name, job.seq, 1, top if cfg.adaptive_batch else job.submission.num_replicas,
                         current=job.workers, requested=job.submission.num_replicas,
                         submitted_s=job.submission.time, attained_s=job.attained_s, batch_size=job.batch,
                         batch=batch, speed=speed, max_workers_seen=job.max_seen, noise=noise,
                         remaining=max(app.target - job.progress, 0.0))

    def _fit(self, job: _Job) -> ThroughputParams | None:
        if not job.observations:
            return None
        key = frozenset(job.observations.values())
        if key not in self._fits:
            self._fits[key] = fit_throughput(list(job.observations.values()))
        return self._fits[key]

    def _apply(self, t: float, active: list[_Job], layout: list[int], workers: dict[str, int],
               batches: dict[str, int]) -> None:
        """Place the decided worker counts; jobs whose placement changed pay the penalty."""
        current = {j.submission.name: dict(j.counts) for j in active}
        wanted = {j.submission.name: workers.get(j.submission.name, 0) for j in active}
        placed = place(layout, current, wanted)
        for job in active:
            name = job.submission.name
            new = placed.get(name, {})
            if self.config.adaptive_batch and name in batches:
                job.batch = batches[name]
            if new != job.counts:
                job.counts = new
                if new:
                    job.restarts += 1
                    job.penalty_s = self.config.restart_penalty_s
                    if job.started_s is None:
                        job.started_s = t
            if new:
                job.max_seen = max(job.max_seen, job.workers)

    def _advance(self, t: float, active: list[_Job]) -> None:
        """Run every placed job for one round."""
        round_s = self.config.round_s
        for job in active:
            if not job.workers:
                continue
            job.attained_s += job.workers * round_s
            idle = min(job.penalty_s, round_s)
            job.penalty_s -= idle
            placement = job.placement()
            seconds, micro, _ = job.app.step(placement, job.batch)
            self._observe(job, placement, micro)
            rate = job.app.progress_per_step(job.progress, job.batch) / seconds
            left = job.app.target - job.progress
            run_s = round_s - idle
            if rate * run_s >= left:
                job.finished_s = t + idle + left / rate
                job.progress = job.app.target
                job.counts = {}
            else:
                job.progress += rate * run_s

    def _observe(self, job: _Job, placement: tuple[int, ...], micro: float) -> None:
        """What the running job reports: the step time of a step without accumulation."""
        nodes = sum(1 for c in placement if c)
        key = (nodes, sum(placement), round(micro, 3))
        if key not in job.observations:
            seconds = job.app.micro_step_time(placement, micro)
            job.observations[key] = StepObservation(nodes, sum(placement), micro, seconds)

    def _rent(self, t: float, request: dict[str, int]) -> None:
        """Nodes asked for are held from the next round on (within what is offered then)."""
        for pool in self.config.pools:
            if pool.name in request:
                self.nodes[pool.name] = max(0, min(request[pool.name], pool.offered(t + self.config.round_s)))
            else:
                self.nodes[pool.name] = min(self.nodes[pool.name], pool.offered(t + self.config.round_s))
