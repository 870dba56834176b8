"""The training loop of one worker group: step until done, evaluating at each epoch's end."""

from __future__ import annotations

from collections.abc import Callable

from elastrain.train.trainer import StepReport, Trainer

StepCallback = Callable[[StepReport], None]
EpochCallback = Callable[[int, dict], None]


def fit(trainer: Trainer, on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None) -> dict:
    """Train until the trainer is done and return the final validation metrics.

    Args:
        trainer: the worker's trainer (possibly resumed mid-epoch).
        on_step: called after every completed step.
        on_epoch: called with (epoch number, 1-based; validation metrics) after every epoch.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the trainer keeps its last good state).
    """
    metrics: dict | None = None
    while not trainer.done:
        report = trainer.train_step()
        if on_step:
            on_step(report)
        metrics = None
        if report.epoch_done:
            metrics = trainer.evaluate()
            if on_epoch:
                on_epoch(report.epoch + 1, metrics)
    return metrics if metrics is not None else trainer.evaluate()
