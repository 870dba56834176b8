"""A decision a job asks for at every epoch's end: go on, or stop there (a study's pruner)."""

from __future__ import annotations

from typing import Protocol


class EpochGate(Protocol):
    """Asked by the job's rank-0 worker after each epoch's evaluation, in the worker's process; it
    must be picklable (it travels to the workers). Returning True stops the job: the group stops
    after its next step, every member at the same one, and the job ends cancelled."""

    def __call__(self, epoch: int, metrics: dict) -> bool:
        """Whether the job stops after `epoch` (1-based), given that epoch's validation metrics
        ({name without `val_`: value}, per-class lists included)."""
