"""Statistical efficiency of a larger batch, from the gradient noise scale.

A step over a batch `scale` times larger than the initial one averages away some of the gradient's
noise; how much that is worth depends on the ratio of the gradient's variance to its squared norm
(McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"; used as statistical
efficiency by Pollux, Qiao et al. OSDI'21 and as the learning-rate gain by AdaScale, Johnson et
al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GradientNoise:
    """Gradient statistics measured at the initial batch size.

    Attributes:
        sqr: squared norm of the true gradient (estimate).
        var: variance of the initial-batch gradient (estimate).
    """

    sqr: float
    var: float


def gain(noise: GradientNoise, scale: np.ndarray | float) -> np.ndarray | float:
    """Progress one step at `scale` x the initial batch makes, in initial-batch steps (1 at
    scale 1, at most `scale`). It is also AdaScale's learning-rate gain for that batch."""
    sqr = max(noise.sqr, 0.0)
    var = max(noise.var, 0.0)
    if sqr + var <= 0.0:   # nothing measured yet: assume the batch is no more efficient
        return np.ones_like(scale) if isinstance(scale, np.ndarray) else 1.0
    return (var + sqr) / (var / scale + sqr)


def efficiency(noise: GradientNoise, scale: np.ndarray | float) -> np.ndarray | float:
    """Progress per sample at `scale` x the initial batch, relative to the initial batch (<= 1)."""
    return gain(noise, scale) / scale


def scaled_learning_rate(lr: float, initial_batch: int, batch: int, rule: str,
                         noise: GradientNoise | None = None) -> float:
    """The learning rate for `batch` when `lr` was tuned for `initial_batch`.

    rule: "linear" (Goyal et al. 2017), "sqrt" (Krizhevsky 2014) or "adascale" (the gain above;
    needs `noise`).
    """
    scale = batch / initial_batch
    if rule == "linear":
        return lr * scale
    if rule == "sqrt":
        return lr * scale ** 0.5
    if rule == "adascale":
        if noise is None:
            raise ValueError("the adascale rule needs the gradient noise")
        return lr * float(gain(noise, scale))
    raise ValueError(f"unknown learning-rate rule '{rule}' (use linear, sqrt or adascale)")
