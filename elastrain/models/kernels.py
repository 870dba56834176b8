"""Kernel approximations that turn a linear model into a kernel machine trained by gradient descent."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomFourierFeatures(nn.Module):
    """The random Fourier feature map of the RBF kernel exp(-gamma ||x - y||^2) (Rahimi and Recht,
    "Random Features for Large-Scale Kernel Machines", NeurIPS 2007): z(x) = sqrt(2 / D) cos(W x + b)
    with W ~ N(0, 2 gamma) and b ~ U[0, 2 pi), so that z(x) . z(y) approximates the kernel, with an
    error that falls as 1 / sqrt(D). scikit-learn's `RBFSampler` is the same map.

    The projection is drawn once from torch's current random generator and kept as buffers (not
    trained, saved with the model), so seeded replicas hold the same one.

    Args:
        n_features: F, the length of an input sample.
        n_components: D, the number of features it maps a sample to.
        gamma: the kernel's width parameter (> 0), in 1 / (feature units)^2.

    Shapes: (N, F) float32 in, (N, D) out.
    """

    def __init__(self, n_features: int, n_components: int, gamma: float) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(n_components, n_features) * math.sqrt(2.0 * gamma))
        self.register_buffer("offset", torch.rand(n_components) * (2.0 * math.pi))
        self.scale = math.sqrt(2.0 / n_components)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cos(F.linear(x, self.weight, self.offset))
