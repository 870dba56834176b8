"""The scheduler's decisions, each with the cluster it was made on: what the server's job loop
records and the dashboard's cluster page shows, after the server or the Ray cluster is gone."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import delete, select

from elastrain.store.repository import Store
from elastrain.store.schema import SchedulerDecision

# Decisions the store keeps (one is recorded only when the allocation changes): days of a busy server.
DECISIONS_KEPT = 10_000


@dataclass(frozen=True)
class PoolState:
    """A node pool as the scheduler saw it: `nodes` held, of `cpus_per_node` CPUs each, at
    `price_per_hour` USD per node-hour."""

    name: str
    nodes: int
    cpus_per_node: float
    price_per_hour: float
    spot: bool = False


@dataclass(frozen=True)
class Decision:
    """An allocation the policy made at `t` (epoch seconds).

    Attributes:
        workers: workers per job id.
        nodes: nodes requested per pool ({}: keep what is held).
        pools: the cluster's pools when it decided.
        cpus_total: CPUs the pools held; cpus_used: CPUs the allocation gives to jobs.
        cost_per_hour: what the held nodes cost, USD per hour.
    """

    t: float
    workers: dict[str, int]
    nodes: dict[str, int]
    pools: tuple[PoolState, ...] = ()
    cpus_total: float = 0.0
    cpus_used: float = 0.0
    cost_per_hour: float = 0.0


def record_decision(store: Store, decision: Decision, keep: int = DECISIONS_KEPT) -> None:
    """Append `decision` to the store, which keeps the last `keep` decisions."""
    with store.session.begin() as session:
        row = SchedulerDecision(t=decision.t, workers=decision.workers, nodes=decision.nodes,
                                pools=[asdict(pool) for pool in decision.pools], cpus_total=decision.cpus_total,
                                cpus_used=decision.cpus_used, cost_per_hour=decision.cost_per_hour)
        session.add(row)
        session.flush()
        session.execute(delete(SchedulerDecision).where(SchedulerDecision.id <= row.id - keep))


def recent_decisions(store: Store, limit: int = 300) -> list[Decision]:
    """The last `limit` decisions, oldest first."""
    with store.session() as session:
        rows = session.scalars(select(SchedulerDecision).order_by(SchedulerDecision.id.desc()).limit(limit))
        return [Decision(r.t, dict(r.workers), dict(r.nodes), tuple(PoolState(**p) for p in r.pools), r.cpus_total,
                         r.cpus_used, r.cost_per_hour) for r in rows][::-1]
