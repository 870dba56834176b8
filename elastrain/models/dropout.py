"""Dropout whose masks belong to the samples, not to the process.

A standard dropout layer draws its mask from the process's random generator, so the mask a
sample gets depends on how the global batch is split over workers and on whatever else drew
from that generator (another job in the same process). `SampleDropout` draws each sample's mask
from a counter-based hash of (job seed, epoch, sample index, layer, feature): the same sample in
the same epoch gets the same mask on 1 worker or on 3, and two jobs in one process draw nothing
from each other. The trainer tells the layers which samples a batch holds (`sample_masks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# splitmix64's constants (Steele, Lea, Flood: "Fast splittable pseudorandom number generators",
# OOPSLA 2014), as signed 64-bit integers: torch's int64 arithmetic wraps around like uint64's.
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64
_UNIFORM_BITS = 24   # float32 holds 24 bits of a uniform draw exactly


def _shift(h: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic)."""
    return (h >> bits) & ((1 << (64 - bits)) - 1)


def _mix(h: torch.Tensor) -> torch.Tensor:
    h = (h ^ _shift(h, 30)) * _MIX1
    h = (h ^ _shift(h, 27)) * _MIX2
    return h ^ _shift(h, 31)


def sample_uniforms(seed: int, epoch: int, samples: torch.Tensor, layer: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform draws in [0, 1), float32, shaped (len(samples), *shape): a function of (seed,
    epoch, sample index, layer, position in `shape`) only.

    Args:
        samples: (N,) int64 indices of the samples in the training set.
    """
    key = _mix(torch.tensor(((seed * 1_000_003 + epoch) * 1_000_003 + layer) * _GOLDEN % 2**63,
                            dtype=torch.int64, device=samples.device))
    per_sample = _mix(key ^ (samples.to(torch.int64) * _GOLDEN))
    width = 1
    for size in shape:
        width *= size
    positions = torch.arange(width, dtype=torch.int64, device=samples.device) * _GOLDEN
    bits = _shift(_mix(per_sample[:, None] + positions[None, :]), 64 - _UNIFORM_BITS)
    return (bits.to(torch.float32) / 2**_UNIFORM_BITS).reshape(len(samples), *shape)


class SampleDropout(nn.Module):
    """Dropout with probability `p` whose masks are drawn per sample (see the module's docstring).

    Outside `sample_masks` (a model called by hand in training mode) it is ordinary dropout.
    """

    def __init__(self, p: float, layer: int) -> None:
        super().__init__()
        self.p = p
        self.layer = layer
        self.draw: tuple[int, int, torch.Tensor] | None = None   # (seed, epoch, sample indices) of the batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.draw is None:
            return F.dropout(x, self.p, training=True)
        seed, epoch, samples = self.draw
        keep = sample_uniforms(seed, epoch, samples, self.layer, tuple(x.shape[1:])) >= self.p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


@contextmanager
def sample_masks(model: nn.Module, seed: int, epoch: int, samples: torch.Tensor) -> Iterator[None]:
    """While the block runs, `model`'s SampleDropout layers draw the masks of training samples
    `samples` ((N,) int64, the batch's rows in order) in epoch `epoch` of a job seeded `seed`."""
    layers = [m for m in model.modules() if isinstance(m, SampleDropout)]
    for layer in layers:
        layer.draw = (seed, epoch, samples)
    try:
        yield
    finally:
        for layer in layers:
            layer.draw = None
