"""Which epoch's model is the best so far, and when training should stop early: pure policies
over the validation metrics that every worker of a group computes identically (they are
all-reduced), so every replica takes the same decision at the same step."""

from __future__ import annotations

from dataclasses import dataclass, replace

from elastrain.errors import UserError
from elastrain.spec import TrainSpec
from elastrain.spec.metrics import DEFAULT_METRIC, LOWER_IS_BETTER


@dataclass(frozen=True)
class BestEpoch:
    """The best evaluation of a watched metric so far.

    Attributes:
        epoch: epochs completed when it was measured.
        step: steps completed when it was measured.
        value: the metric's value then.
        stale: evaluations since, none of them better by more than the watch's min_delta.
    """

    epoch: int
    step: int
    value: float
    stale: int = 0


def check_metric_task(metric: str, names: tuple[str, ...], task: str, where: str) -> None:
    """Check that `metric` is one of `names`, the metrics the learner measures for a model of this `task`.

    Raises:
        UserError: a regression metric for a classifier, the other way round, or a metric only
            another kind of model measures.
    """
    if metric not in names:
        raise UserError(f"{metric} is not measured for a {task} model", where=where,
                        fix=f"use one of {', '.join(names)}")


def watched_metrics(train: TrainSpec, task: str, measured: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The metric train.keep_best selects the model by, and the one early stopping watches (None
    where none is), given the metrics the learner `measured` for a model of this `task`.

    Raises:
        UserError: a metric the learner does not measure for this task.
    """
    stopping = train.early_stopping
    stop = None
    if stopping is not None:
        stop = (train.keep_best or DEFAULT_METRIC[task]) if stopping.metric == "auto" else stopping.metric
    for metric, where in ((train.keep_best, "train.keep_best"), (stop, "train.early_stopping.metric")):
        if metric:
            check_metric_task(metric, measured, task, where)
    return train.keep_best, stop


def improved(metric: str, value: float, best: float, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` (lower is better for errors, higher
    for every other metric; Keras' and Lightning's EarlyStopping convention)."""
    gain = best - value if metric in LOWER_IS_BETTER else value - best
    return gain > min_delta


def judge(best: BestEpoch | None, metric: str, value: float, epoch: int, step: int,
          min_delta: float = 0.0) -> BestEpoch:
    """The best evaluation after one more, measured after `epoch` epochs and `step` steps."""
    if best is None or improved(metric, value, best.value, min_delta):
        return BestEpoch(epoch, step, value)
    return replace(best, stale=best.stale + 1)
