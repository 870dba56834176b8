"""The plain data every policy reads and returns (invariant 4 of docs/architecture.md: the same
objects describe a live cluster and a simulated one).

Capacity is counted in *slots*: GPUs in the simulator and on GPU clusters, CPUs on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elastrain.scheduler.efficiency import GradientNoise
from elastrain.scheduler.throughput import ThroughputParams


@dataclass(frozen=True)
class NodePool:
    """One kind of node the cluster can rent.

    Attributes:
        name: e.g. "on-demand" or "spot".
        slots_per_node: slots one node brings.
        nodes: nodes of this pool held now.
        max_nodes: nodes that can be had now (for spot: what the market offers at the moment).
        price_per_hour: cost of one node for one hour (from the user's prices config).
        spot: whether the provider may take these nodes back.
    """

    name: str
    slots_per_node: float
    nodes: int
    max_nodes: int
    price_per_hour: float = 0.0
    spot: bool = False

    @property
    def slots(self) -> float:
        """Slots held now in this pool."""
        return self.nodes * self.slots_per_node


@dataclass(frozen=True)
class Cluster:
    """The capacity jobs share: one or more node pools, and at most `max_nodes` nodes in all
    (None: each pool's own limit)."""

    pools: tuple[NodePool, ...]
    max_nodes: int | None = None

    @classmethod
    def single(cls, slots: float, price_per_hour: float = 0.0) -> Cluster:
        """A fixed machine (or fixed cluster) of `slots` slots costing `price_per_hour`, nothing to rent."""
        return cls((NodePool("local", slots, 1, 1, price_per_hour),))

    @property
    def slots(self) -> float:
        """Slots held now, all pools together."""
        return sum(pool.slots for pool in self.pools)

    @property
    def slots_per_node(self) -> float:
        """The largest node's slots (what a job packed onto one node can use)."""
        return max((pool.slots_per_node for pool in self.pools), default=1.0)

    def held_nodes(self) -> dict[str, int]:
        """Nodes held now per pool: the node request of a policy that does not autoscale."""
        return {pool.name: pool.nodes for pool in self.pools}


@dataclass(frozen=True)
class BatchLimits:
    """How far a job lets the scheduler change its global batch size (adaptive batching).

    Attributes:
        initial: the batch size its learning rate was tuned for; efficiency is relative to it.
        maximum: the largest global batch allowed.
        max_local: the largest batch one worker holds in memory (beyond it: gradient accumulation).
        min_local: the smallest per-worker batch worth running.
    """

    initial: int
    maximum: int
    max_local: int
    min_local: int = 1


@dataclass(frozen=True)
class JobDemand:
    """What a policy knows of one job.

    Attributes:
        job_id: its identity.
        seq: submission order.
        min_workers / max_workers: the range the job accepts.
        slots_per_worker: slots one worker takes.
        current: workers it holds now (0: queued or preempted).
        requested: the fixed size its user asked for (gang policies run it at exactly this).
        submitted_s: when it arrived, in the policy clock's seconds.
        attained_s: worker-seconds of service received so far.
        batch_size: its global batch size now.
        batch: limits for adaptive batching; None: the batch size is fixed.
        speed: its step-time model, fitted from the step times observed so far.
        max_workers_seen: the most workers it has run on (the fitted model is trusted up to
            twice that).
        noise: its gradient noise (statistical efficiency of larger batches).
        remaining: progress left, in steps at the initial batch size; None: unknown.
    """

    job_id: str
    seq: int
    min_workers: int
    max_workers: int
    slots_per_worker: float = 1.0
    current: int = 0
    requested: int | None = None
    submitted_s: float = 0.0
    attained_s: float = 0.0
    batch_size: int | None = None
    batch: BatchLimits | None = None
    speed: ThroughputParams | None = None
    max_workers_seen: int = 0
    noise: GradientNoise | None = None
    remaining: float | None = None

    @property
    def gang_size(self) -> int:
        """The size a gang policy runs this job at."""
        return min(max(self.requested or self.min_workers, self.min_workers), self.max_workers)


@dataclass(frozen=True)
class Allocation:
    """A policy's decision.

    Attributes:
        workers: workers per job; a job absent or at 0 stays queued (or, if running, is stopped).
        batch_size: the global batch size of jobs whose batch the policy chose.
        nodes: nodes wanted per pool (the request that goes to the autoscaler); empty: keep what
            is held.
    """

    workers: dict[str, int]
    batch_size: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
