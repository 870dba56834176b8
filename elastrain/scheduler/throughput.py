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

    Only constants the observations can tell apart are fitted: the compute slope needs two local
    batch sizes (otherwise a tenth of the step is taken as fixed cost), sync constants need runs
    on several workers within one node (intra-node) or across nodes (inter-node; without them the
    intra-node ones are borrowed), a sync slope needs two such worker counts, and the overlap
    exponent needs more observations than other constants. Callers should not trust the result
    far beyond the largest configuration observed.
    """
    if not observations:
        raise ValueError("no step times observed")
    nodes = np.array([o.nodes for o in observations], dtype=float)
    workers = np.array([o.workers for o in observations], dtype=float)
    local = np.array([o.local_batch for o in observations], dtype=float)
    seconds = np.array([o.step_time for o in observations], dtype=float)
    single = seconds[workers == 1] if (workers == 1).any() else seconds
    compute_guess = float(single.min())
    intra = (nodes == 1) & (workers > 1)
    inter = nodes > 1
    free = [0]
    if len(np.unique(local)) > 1:
        free.append(1)
    if intra.any():
        free.append(2)
        if len(np.unique(workers[intra])) > 1:
            free.append(3)
    if inter.any():
        free.append(4)
        if len(np.unique(workers[inter])) > 1:
            free.append(5)
    if (intra | inter).sum() >= 3 and len(observations) > len(free) + 1:
        free.append(6)
    start = np.array([0.1 * compute_guess, 0.9 * compute_guess / max(float(local.min()), 1.0),
                      0.1 * compute_guess, 0.0, 0.2 * compute_guess, 0.0, 1.0])

    def expand(x: np.ndarray) -> ThroughputParams:
        values = start.copy()
        values[free] = x
        if 4 not in free:   # never ran across nodes: assume it costs what syncing within one does
            values[[4, 5]] = values[[2, 3]]
        if 2 not in free and 4 in free:
            values[[2, 3]] = values[[4, 5]]
        return ThroughputParams(*values)

    def residuals(x: np.ndarray) -> np.ndarray:
        predicted = step_time(expand(x), nodes, workers, local)
        return np.log(np.maximum(predicted, 1e-9)) - np.log(seconds)

    lower = np.array([0.0] * 6 + [1.0])[free]
    upper = np.array([np.inf] * 6 + [10.0])[free]
    x0 = np.clip(start[free], lower, upper - 1e-9) + np.where(upper > 1e6, 1e-6, 0.0)
    fitted = least_squares(residuals, x0, bounds=(lower, upper), max_nfev=200)
    return expand(fitted.x)
