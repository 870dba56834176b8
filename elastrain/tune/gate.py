"""The pruning decision of a study, taken inside the trial's rank-0 worker at each epoch's end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elastrain.spec.tune import TuneSpec


@dataclass
class OptunaPruneGate:
    """An `EpochGate` that reports the epoch's value of the study's metric to Optuna and stops the
    trial when the study's pruner says so; it reads and writes the study's storage from the worker
    (a trial whose epochs take milliseconds is pruned at the epoch the pruner judged, not epochs
    later as a decision polled by the tuner would be).

    Attributes:
        storage: the study's database URL.
        study: the study's name.
        trial_id: Optuna's id of the trial (not its number).
        metric: the study's metric (`val_` prefixed, as the spec names it).
        tune: the study's tune section as JSON (the pruner is built from it in the worker).
        max_epochs: a trial's length in epochs (Hyperband's maximum resource).
    """

    storage: str
    study: str
    trial_id: int
    metric: str
    tune: str
    max_epochs: int
    _trial: Any = field(default=None, repr=False, compare=False)

    def __call__(self, epoch: int, metrics: dict) -> bool:
        import optuna

        from elastrain.tune.optuna_setup import make_pruner

        value = metrics.get(self.metric.removeprefix("val_"))
        if not isinstance(value, float):
            return False
        if self._trial is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            pruner = make_pruner(TuneSpec.model_validate_json(self.tune), self.max_epochs)
            self._trial = optuna.Trial(optuna.load_study(study_name=self.study, storage=self.storage, pruner=pruner),
                                       self.trial_id)
        self._trial.report(value, epoch)
        return self._trial.should_prune()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_trial": None}   # the study is loaded again where the gate runs
