"""Where a job's workers go: jobs that keep their size stay put; others are packed onto as few
nodes as possible (whole free nodes first, then the tightest node that fits the rest)."""

from __future__ import annotations


def place(capacity: list[int], current: dict[str, dict[int, int]],
          wanted: dict[str, int]) -> dict[str, dict[int, int]]:
    """Node index -> workers for each job with a non-zero wanted count.

    Args:
        capacity: slots of each node (0: the node is not held).
        current: each job's present placement.
        wanted: each job's decided worker count.

    A job that cannot be placed in what is left gets no placement (it waits).
    """
    free = list(capacity)
    placed: dict[str, dict[int, int]] = {}
    moving = []
    for name, count in wanted.items():
        now = current.get(name, {})
        if count > 0 and sum(now.values()) == count and all(capacity[n] > 0 for n in now):
            placed[name] = dict(now)
            for node, used in now.items():
                free[node] -= used
        elif count > 0:
            moving.append(name)
    for name in sorted(moving, key=lambda n: (-wanted[n], n)):
        spot = _pack(free, capacity, wanted[name])
        if spot:
            placed[name] = spot
            for node, used in spot.items():
                free[node] -= used
    return placed


def _pack(free: list[int], capacity: list[int], count: int) -> dict[int, int]:
    if sum(free) < count:
        return {}
    spot: dict[int, int] = {}
    left = count
    for node in range(len(free)):   # whole free nodes first
        if left >= capacity[node] > 0 and free[node] == capacity[node]:
            spot[node] = capacity[node]
            left -= capacity[node]
    while left > 0:
        fitting = [n for n in range(len(free)) if n not in spot and free[n] >= left]
        if fitting:
            node = min(fitting, key=lambda n: (free[n], n))
            spot[node] = left
            left = 0
        else:
            node = max((n for n in range(len(free)) if n not in spot), key=lambda n: (free[n], -n))
            spot[node] = free[node]
            left -= free[node]
    return spot
