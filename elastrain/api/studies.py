"""Hyperparameter studies as the API shows them, read from Optuna's storage in the jobs' database
(`elastrain tune` keeps them there). A user sees a study one of whose trials is a job they may see;
an admin sees every study."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, inspect

# Which of a set of job ids the viewer may see (None: an admin, who sees all).
Visibility = Callable[[set[str]], set[str]] | None


@dataclass(frozen=True)
class TrialView:
    """One trial: its state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), final or last value, the
    parameters it set, its intermediate values by step (epoch), and the job that ran it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    intermediate: dict[int, float]
    job_id: str | None
    datetime_start: datetime | None
    datetime_complete: datetime | None


@dataclass(frozen=True)
class StudyView:
    """A study: `direction` is minimize or maximize; `trials` in the order they were asked for."""

    name: str
    direction: str
    trials: list[TrialView] = field(default_factory=list)

    @property
    def best(self) -> TrialView | None:
        """The complete trial with the best value, if any."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        pick = min if self.direction == "minimize" else max
        return pick(done, key=lambda t: t.value) if done else None


def load_studies(engine: Engine, visible: Visibility, name: str | None = None) -> list[StudyView]:
    """The studies in `engine`'s database that the viewer may see (only the one called `name`, if
    given); none when no study was ever stored there (Optuna's tables are not created)."""
    if not inspect(engine).has_table("studies"):
        return []
    import optuna

    storage = optuna.storages.RDBStorage(engine.url.render_as_string(hide_password=False),
                                         skip_table_creation=True, skip_compatibility_check=True)
    shown = []
    for study in storage.get_all_studies():
        if name is not None and study.study_name != name:
            continue
        space = _space(study.user_attrs)
        trials = [_trial(t, space) for t in storage.get_all_trials(study._study_id, deepcopy=False)]
        jobs = {t.job_id for t in trials if t.job_id}
        if visible is None or visible(jobs):
            shown.append(StudyView(study.study_name, study.direction.name.lower(), trials))
    return shown


def _space(study_attrs: dict[str, Any]) -> dict[str, Any]:
    """The search space of a study `elastrain tune` ran (from the job spec it keeps with the
    study); empty for any other study or a spec this version cannot read."""
    from elastrain.errors import UserError
    from elastrain.spec import validate_spec
    from elastrain.tune.study import SPEC_ATTR  # (the tuner's modules are slow to import)

    try:
        spec = validate_spec(json.loads(study_attrs[SPEC_ATTR]), "study")
    except (KeyError, TypeError, ValueError, UserError):
        return {}
    return dict(spec.tune.space) if spec.tune else {}


def _trial(trial: Any, space: dict[str, Any]) -> TrialView:
    """`trial` with its parameters as the spec's values (a list choice as the list, not its index)."""
    from elastrain.tune.space import trial_overrides
    from elastrain.tune.study import JOB_ATTR

    return TrialView(trial.number, trial.state.name, trial.value if trial.values else None,
                     trial_overrides(trial.params, space), dict(trial.intermediate_values),
                     trial.user_attrs.get(JOB_ATTR), trial.datetime_start, trial.datetime_complete)
