"""The training loop of one worker group: step until done, evaluating at each epoch's end.

The same loop runs a job in one process and inside every worker of an elastic group; in a
group, every worker runs it in lock step (each step and each evaluation is a collective).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from elastrain.train.learner import Learner, StepReport

StepCallback = Callable[[StepReport], None]
EpochCallback = Callable[[int, dict], None]


@dataclass
class FitOutcome:
    """How a call to :func:`fit` ended: `done` with the final validation metrics, or `paused`
    (some worker asked the group to stop; every worker stopped after the same step)."""

    status: str
    metrics: dict | None


def fit(trainer: Learner, on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
        pause_requested: Callable[[], bool] | None = None) -> FitOutcome:
    """Train until the trainer is done, or until a worker of the group asks to pause.

    Args:
        trainer: the worker's learner (possibly resumed mid-epoch or mid-evaluation).
        on_step: called after every completed step.
        on_epoch: called with (epoch number, 1-based; validation metrics) after every epoch.
        pause_requested: polled before each step; when it is true on any worker, the whole
            group stops after that step (and after the evaluation, if the step ended an epoch).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the trainer keeps its last good state).
    """
    metrics: dict | None = None
    if trainer.eval_pending:   # an evaluation was cut off by a failure: finish it first
        metrics = _evaluate(trainer, on_epoch)
    while not trainer.done:
        report = trainer.train_step(signal=1.0 if pause_requested and pause_requested() else 0.0)
        if on_step:
            on_step(report)
        metrics = _evaluate(trainer, on_epoch) if report.epoch_done else None
        if report.signal > 0 and not trainer.done:
            return FitOutcome("paused", None)
    if metrics is None:   # the job ended mid-epoch (train.max_steps): evaluate where it stopped
        metrics = trainer.evaluate()
        trainer.record_evaluation(metrics)
    return FitOutcome("done", trainer.finish(metrics))


def _evaluate(trainer: Learner, on_epoch: EpochCallback | None) -> dict:
    metrics = trainer.evaluate()
    trainer.record_evaluation(metrics)
    if on_epoch:
        on_epoch(trainer.epoch, metrics)
    return metrics
