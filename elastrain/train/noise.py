"""The gradient noise of a data-parallel job, measured from the gradients its workers already add up.

A mean gradient over `b` samples has expected squared norm `|G|^2 + tr(S)/b`, where `G` is the
true gradient and `S` the covariance of one sample's gradient (McCandlish et al. 2018, "An
Empirical Model of Large-Batch Training", appendix A). Each worker's local mean gradient (over
its share of `b` samples) and the group's mean gradient (over the global batch of `B`) are two
such measurements, which give unbiased estimates of both unknowns:

    |G|^2 = (B |g_B|^2 - b |g_b|^2) / (B - b)        tr(S) = (|g_b|^2 - |g_B|^2) / (1/b - 1/B)

One step's estimates are very noisy (the first can be negative), so they are smoothed with an
exponential moving average, bias-corrected as Adam's moments are, so the first steps count fully.
"""

from __future__ import annotations

import math

# Weight of the past in the moving average: about the last 1 / (1 - 0.98) = 50 steps count.
SMOOTHING = 0.98


def local_batch_harmonic(global_batch: int, world_size: int) -> tuple[int, float]:
    """The workers that hold samples when `global_batch` is split over `world_size` (shares
    differing by at most one, as `data.sampler.shard` splits), and the harmonic mean of their
    share sizes: the `b` for which the mean over workers of `|g_b|^2` has expectation
    `|G|^2 + tr(S)/b` when shares are uneven."""
    base, extra = divmod(global_batch, world_size)
    sizes = [base + 1] * extra + [base] * (world_size - extra)
    held = [size for size in sizes if size > 0]
    if not held:
        return 0, 0.0
    return len(held), len(held) / sum(1.0 / size for size in held)


class GradientNoiseEstimate:
    """Smoothed estimates of the true gradient's squared norm and of the per-sample gradient
    variance (trace of its covariance), updated once per step of a group of two or more workers."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        self.smoothing = smoothing
        self._sqr = 0.0      # moving averages, not yet bias-corrected
        self._trace = 0.0
        self._weight = 0.0   # 1 - smoothing^updates: the share of the averages that holds data

    @property
    def measured(self) -> bool:
        """Whether any step has been measured."""
        return self._weight > 0.0

    @property
    def sqr(self) -> float:
        """Estimated `|G|^2` (0 before any measurement)."""
        return self._sqr / self._weight if self._weight else 0.0

    @property
    def trace(self) -> float:
        """Estimated `tr(S)`, the variance of one sample's gradient (0 before any measurement)."""
        return self._trace / self._weight if self._weight else 0.0

    def update(self, local_sqr: float, global_sqr: float, local_batch: float, global_batch: float) -> bool:
        """Add one step's measurement.

        Args:
            local_sqr: mean over the workers of the squared norm of each one's local mean gradient.
            global_sqr: squared norm of the group's mean gradient.
            local_batch: `b`, the (harmonic mean) number of samples per worker.
            global_batch: `B`, the samples of the whole step.

        Returns:
            Whether the step could be used (it cannot with one worker, or non-finite norms).
        """
        if not 0 < local_batch < global_batch or not (math.isfinite(local_sqr) and math.isfinite(global_sqr)):
            return False
        sqr = (global_batch * global_sqr - local_batch * local_sqr) / (global_batch - local_batch)
        trace = (local_sqr - global_sqr) / (1.0 / local_batch - 1.0 / global_batch)
        keep = self.smoothing
        self._sqr = keep * self._sqr + (1.0 - keep) * sqr
        self._trace = keep * self._trace + (1.0 - keep) * trace
        self._weight = keep * self._weight + (1.0 - keep)
        return True

    def state_dict(self) -> dict:
        """The averages, to carry over to other replicas and checkpoints."""
        return {"sqr": self._sqr, "trace": self._trace, "weight": self._weight}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from a :meth:`state_dict` (None: start unmeasured)."""
        state = state or {}
        self._sqr = float(state.get("sqr", 0.0))
        self._trace = float(state.get("trace", 0.0))
        self._weight = float(state.get("weight", 0.0))
