"""A job's step time as a function of where it runs, fitted from the step times it has shown.

The form follows the throughput model of Pollux (Qiao et al., OSDI'21, section 3.2): per-worker
compute time linear in the local batch; gradient synchronisation linear in the number of workers,
with separate constants within one node and across nodes; the two overlap, combined as
`(compute^g + sync^g)^(1/g)`; each extra gradient-accumulation micro-step adds one compute time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares


@dataclass(frozen=True)
class ThroughputParams:
    """Constants of the step-time model (seconds; `gamma` >= 1 is the overlap exponent)."""

    alpha_c: float
    beta_c: float
    alpha_r: float = 0.0
    beta_r: float = 0.0
    alpha_n: float = 0.0
    beta_n: float = 0.0
    gamma: float = 1.0


@dataclass(frozen=True)
class StepObservation:
    """One measured configuration: workers over nodes, per-worker micro-batch, seconds per step."""

    nodes: int
    workers: int
    local_batch: float
    step_time: float


def step_time(params: ThroughputParams, nodes: np.ndarray | int, workers: np.ndarray | int,
              local_batch: np.ndarray | float, accumulation: np.ndarray | int = 0) -> np.ndarray:
    """Predicted seconds per optimizer step (`accumulation` extra micro-steps before it)."""
    p = params
    nodes = np.asarray(nodes, dtype=float)
    workers = np.asarray(workers, dtype=float)
    compute = p.alpha_c + p.beta_c * np.asarray(local_batch, dtype=float)
    extra = np.maximum(workers - 2.0, 0.0)
    sync = np.where(nodes > 1, p.alpha_n + p.beta_n * extra, p.alpha_r + p.beta_r * extra)
    sync = np.where(workers > 1, sync, 0.0)
    gamma = max(p.gamma, 1.0)
    overlapped = (compute ** gamma + sync ** gamma) ** (1.0 / gamma)
    return np.asarray(accumulation) * compute + overlapped


def fit_throughput(observations: list[StepObservation]) -> ThroughputParams:
    """The constants that best explain `observations` (least squares on log step time).

    Regimes not observed yet borrow from those that were: without multi-node runs the cross-node
    constants equal the single-node ones; without multi-worker runs there is no sync cost. Callers
    should not trust the result far beyond the largest configuration observed.
    """
    if not observations:
        raise ValueError("no step times observed")
    nodes = np.array([o.nodes for o in observations], dtype=float)
    workers = np.array([o.workers for o in observations], dtype=float)
    local = np.array([o.local_batch for o in observations], dtype=float)
    seconds = np.array([o.step_time for o in observations], dtype=float)
    multi_worker = bool((workers > 1).any())
    multi_node = bool((nodes > 1).any())
    fastest = float(seconds.min())
    start = np.array([fastest / 2, fastest / (2 * max(local.min(), 1.0)), fastest / 4, fastest / 40,
                      fastest / 2, fastest / 20, 1.5])
    free = [0, 1] + ([2, 3, 6] if multi_worker else []) + ([4, 5] if multi_node else [])

    def expand(x: np.ndarray) -> ThroughputParams:
        values = start.copy()
        values[free] = x
        if not multi_worker:
            values[[2, 3]] = 0.0
            values[6] = 1.0
        if not multi_node:
            values[[4, 5]] = values[[2, 3]]
        return ThroughputParams(*values)

    def residuals(x: np.ndarray) -> np.ndarray:
        predicted = step_time(expand(x), nodes, workers, local)
        return np.log(np.maximum(predicted, 1e-9)) - np.log(seconds)

    lower = np.array([0.0] * 6 + [1.0])[free]
    upper = np.array([np.inf] * 6 + [10.0])[free]
    x0 = np.clip(start[free], lower + 1e-12, upper - 1e-9)
    fitted = least_squares(residuals, x0, bounds=(lower, upper), max_nfev=200)
    return expand(fitted.x)

