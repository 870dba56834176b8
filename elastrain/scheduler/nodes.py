"""Which nodes to rent for a wanted amount of capacity: cheapest slots first, within a budget."""

from __future__ import annotations

import math
from collections.abc import Sequence

from elastrain.scheduler.types import NodePool


def plan_nodes(pools: Sequence[NodePool], wanted_slots: float,
               budget_per_hour: float | None = None) -> dict[str, int]:
    """Nodes per pool that cover `wanted_slots` at the lowest price per slot, taking no more
    nodes from a pool than it offers now and, with a budget, spending at most `budget_per_hour`
    (capacity the budget cannot pay for is left out)."""
    plan = {pool.name: 0 for pool in pools}
    left = wanted_slots
    spend = 0.0
    for pool in sorted(pools, key=lambda p: (p.price_per_hour / p.slots_per_node, not p.spot)):
        if left <= 1e-9:
            break
        count = min(pool.max_nodes, math.ceil(left / pool.slots_per_node - 1e-9))
        if budget_per_hour is not None and pool.price_per_hour > 0:
            count = min(count, int((budget_per_hour - spend + 1e-9) // pool.price_per_hour))
        count = max(count, 0)
        plan[pool.name] = count
        spend += count * pool.price_per_hour
        left -= count * pool.slots_per_node
    return plan
