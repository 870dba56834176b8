"""A user model for `model.kind: python:my_model:build` (see user_model.yaml).

elastrain calls the function with the shape of one sample, the number of outputs the
loss needs, and the keys of `model.options`; it must return a `torch.nn.Module` that maps
(N, prod(input_shape)) float32 features to (N, n_outputs) scores.
"""

import math

from torch import nn


def build(input_shape: tuple[int, ...], n_outputs: int, width: int = 32) -> nn.Module:
    """A two-layer network with a residual-free SiLU hidden layer."""
    return nn.Sequential(nn.Linear(math.prod(input_shape), width), nn.SiLU(), nn.Linear(width, n_outputs))
