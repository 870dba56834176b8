"""Which nodes to rent for a wanted amount of capacity (cheapest slots first, within a budget),
and how a node request reaches Ray's autoscaler."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from elastrain.scheduler.policy import Policy
from elastrain.scheduler.types import Allocation, Cluster, JobDemand, NodePool


def plan_nodes(pools: Sequence[NodePool], wanted_slots: float, budget_per_hour: float | None = None,
               max_nodes: int | None = None) -> dict[str, int]:
    """Nodes per pool that cover `wanted_slots` at the lowest price per slot, taking no more
    nodes from a pool than it offers now, no more than `max_nodes` in all and, with a budget,
    spending at most `budget_per_hour` (capacity the budget cannot pay for is left out)."""
    return plan_for_gains(pools, [(math.inf, wanted_slots)], 0.0, budget_per_hour, max_nodes)


def plan_for_gains(pools: Sequence[NodePool], gains: Iterable[tuple[float, float]], min_speedup_per_slot: float,
                   budget_per_hour: float | None = None, max_nodes: int | None = None) -> dict[str, int]:
    """Nodes per pool for the slots worth their price.

    `gains` lists (speedup each slot adds, slots): a slot is worth a node of a pool when it adds
    at least `min_speedup_per_slot` times the pool's price per slot over the dearest pool's (so
    `min_speedup_per_slot` itself for the dearest, proportionally less for cheaper capacity). The
    slots adding most are placed first, in the cheapest pools first; a pool gives no more nodes
    than it offers now, `max_nodes` caps the nodes in all and, with a budget, the nodes cost at
    most `budget_per_hour` (capacity the budget cannot pay for is left out).
    """
    ranked = sorted(gains, key=lambda gain: -gain[0])
    dearest = max((pool.price_per_hour / pool.slots_per_node for pool in pools), default=0.0)
    plan = {pool.name: 0 for pool in pools}
    covered = 0.0
    spend = 0.0
    nodes_left = math.inf if max_nodes is None else max_nodes
    for pool in sorted(pools, key=lambda p: (p.price_per_hour / p.slots_per_node, not p.spot)):
        relative_price = pool.price_per_hour / pool.slots_per_node / dearest if dearest > 0 else 1.0
        threshold = min_speedup_per_slot * relative_price
        worth = sum(slots for speedup, slots in ranked if speedup >= threshold)
        count = min(pool.max_nodes, nodes_left, math.ceil((worth - covered) / pool.slots_per_node - 1e-9))
        if budget_per_hour is not None and pool.price_per_hour > 0:
            count = min(count, int((budget_per_hour - spend + 1e-9) // pool.price_per_hour))
        count = max(int(count), 0)
        plan[pool.name] = count
        spend += count * pool.price_per_hour
        nodes_left -= count
        covered += count * pool.slots_per_node
    return plan


def node_bundles(pools: Sequence[NodePool], nodes: Mapping[str, int], resource: str = "CPU") -> list[dict[str, float]]:
    """The resource request that asks an autoscaler for the nodes in `nodes`: one bundle of a
    whole node's slots (as `resource`) per node wanted, pools in the order of `pools`.

    Ray's autoscaler (`ray.autoscaler.sdk.request_resources(bundles=...)`) keeps or adds nodes
    until every bundle fits, counting the nodes already held, so a cluster whose node types all
    have one size ends with the requested number of nodes (with mixed sizes, bundles of small
    nodes may share a large one). Which type it adds for a bundle is its own choice among those
    large enough. Pools absent from `nodes` ask for none; names that no pool has are ignored.
    """
    return [{resource: pool.slots_per_node} for pool in pools for _ in range(max(nodes.get(pool.name, 0), 0))]


class FixedSize:
    """Runs a policy that keeps whatever nodes it is given on a cluster of `nodes` nodes that
    are replaced as they are lost: every round it asks for `nodes` nodes in all, the cheapest per
    slot on offer first (spot before on-demand at the usual prices), the way a fixed-size cluster
    manager with a spot pool would. The wrapped policy's workers and batch sizes pass through unchanged.
    """

    def __init__(self, policy: Policy, nodes: int) -> None:
        self.policy = policy
        self.nodes = nodes

    def allocate(self, now: float, cluster: Cluster, jobs: Sequence[JobDemand]) -> Allocation:
        """The wrapped policy's allocation, with the node request of a fixed-size cluster."""
        decision = self.policy.allocate(now, cluster, jobs)
        nodes = plan_nodes(cluster.pools, self.nodes * cluster.slots_per_node)
        return Allocation(decision.workers, decision.batch_size, nodes)
