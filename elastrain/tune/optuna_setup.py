"""The Optuna objects a study's `tune:` section names: its sampler, its pruner, its storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elastrain.spec.tune import TuneSpec
from elastrain.tune.space import grid_of

if TYPE_CHECKING:
    import optuna


def make_sampler(tune: TuneSpec) -> optuna.samplers.BaseSampler:
    """The sampler `tune.sampler` names, seeded with `tune.seed`."""
    import optuna

    match tune.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=tune.seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=tune.seed)
        case "grid":
            return optuna.samplers.GridSampler(grid_of(tune.space), seed=tune.seed)
        case "cmaes":   # CMA-ES samples numbers; categorical parameters fall back to random sampling
            return optuna.samplers.CmaEsSampler(seed=tune.seed, warn_independent_sampling=False)
        case _:
            return optuna.samplers.GPSampler(seed=tune.seed)


def make_pruner(tune: TuneSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner `tune.pruner` names; its resource is the epoch (`max_epochs`: a trial's length).

    `asha` is Optuna's `SuccessiveHalvingPruner`, the asynchronous successive halving of Li et al.
    (MLSys 2020): a trial goes on past a rung only if it is in the top 1/`reduction_factor` of the
    trials that reached that rung.
    """
    import optuna

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
