"""The Optuna objects a study's `tune:` section names: its sampler, its pruner, its storage."""

from __future__ import annotations

import math
from typing import Any

import optuna

from elastrain.spec.tune import TuneSpec
from elastrain.tune.space import grid_of


class AskTellGrid(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a study driven by ask and tell: it does not call `Study.stop`
    once the grid is spent (allowed only inside `Study.optimize`); the study asks for at most
    `grid_size` trials instead."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def make_sampler(tune: TuneSpec, asked: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler `tune.sampler` names, for a study that has already asked `asked` trials: seeded
    with `tune.seed + asked`, so that a resumed study draws new parameters, not its first trials'
    again, and any two resumes at the same point draw the same."""
    seed = tune.seed + asked
    match tune.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "grid":
            return AskTellGrid(grid_of(tune.space), seed=seed)
        case "cmaes":   # CMA-ES samples numbers; categorical parameters fall back to random sampling
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case _:
            return optuna.samplers.GPSampler(seed=seed)


def grid_size(tune: TuneSpec) -> int | None:
    """How many distinct trials the grid sampler has (None for other samplers): a study never
    asks for more (Optuna's grid sampler repeats points once the grid is spent)."""
    if tune.sampler != "grid":
        return None
    return math.prod(len(values) for values in grid_of(tune.space).values())


def make_pruner(tune: TuneSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner `tune.pruner` names; its resource is the epoch (`max_epochs`: a trial's length).

    `asha` is Optuna's `SuccessiveHalvingPruner`, the asynchronous successive halving of Li et al.
    (MLSys 2020): a trial goes on past a rung only if it is in the top 1/`reduction_factor` of the
    trials that reached that rung.
    """
    match tune.pruner:
        case "asha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=tune.min_epochs,
                                                          reduction_factor=tune.reduction_factor)
        case "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=tune.min_epochs, max_resource=max_epochs,
                                                  reduction_factor=tune.reduction_factor)
        case "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=tune.min_epochs - 1)
        case _:
            return optuna.pruners.NopPruner()


def storage_url(url: str | None = None) -> str:
    """Where studies are stored: the jobs' database (`ELASTRAIN_DB_URL`, else the SQLite file under
    `ELASTRAIN_HOME`), with elastrain's own schema brought up to date first (see
    `elastrain.store.schema.VERSION_TABLE`: the two schemas share it)."""
    from elastrain.store import connect
    from elastrain.store.db import database_url

    url = url or database_url()
    connect(url).dispose()
    return url

