"""The peers of the tuning benchmark: Optuna alone, and Ray Tune (ASHA + OptunaSearch).

Both search one space over one job (an MLP on scikit-learn's digits) with the same seeds and
trial budget, and train every trial with elastrain's own Trainer in the process that runs it, one
epoch at a time, so that only the search machinery differs. `bench/tune.py` adds elastrain's side.

    python -m bench.tune_peers --system optuna --seed 0 --trials 6 --target 0.975

Both runners count times the same way: `time_to_target_s` is the time from the start of the
search to the first epoch of any trial whose validation accuracy reached `target` (the report as
the trial made it), and `best_accuracy` is the highest validation accuracy any trial reported at
any epoch. `finished` lists every finished trial (completed, pruned or failed) in the order they
finished: {"t": seconds since the start, "best": the best accuracy reported so far, "state"}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

# The job and space tuned: "digits" (an MLP on scikit-learn's digits) or "mnist" (the CNN of
# examples/cnn_mnist.yaml on the MNIST test set in datasets/), by BENCH_TUNE_WORKLOAD. It is read
# at import, so that Ray Tune's trial processes, which import this module anew, tune the same one.
WORKLOAD = os.environ.get("BENCH_TUNE_WORKLOAD", "digits")
MNIST = Path(__file__).resolve().parents[1] / "datasets" / "mnist-t10k"
WORKLOADS: dict[str, tuple[dict, dict, float]] = {
    "digits": ({
        "name": "tune-bench",
        "data": {"source": "builtin:digits", "validation_fraction": 0.2},
        "model": {"kind": "mlp", "hidden": [128], "activation": "relu"},
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 20, "seed": 0},
        "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1},
    }, {
        "train.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        "model.hidden": {"type": "categorical", "choices": [[64], [128], [256], [256, 128]]},
        "model.activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    }, 0.975),
    "mnist": ({
        "name": "tune-bench-mnist",
        "data": {"source": f"idx:{MNIST}", "validation_fraction": 0.2, "split_seed": 0, "scaling": "standardize"},
        "model": {"kind": "cnn", "channels": [16, 32], "kernel_size": 3, "hidden": [64]},
        "train": {"optimizer": "adam", "lr": 0.002, "batch_size": 64, "epochs": 8, "seed": 0,
                  "schedule": {"kind": "cosine"}},
        "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1},
    }, {
        "train.lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        "model.channels": {"type": "categorical", "choices": [[8, 16], [16, 32], [32, 64]]},
        "model.activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    }, 0.985),
}
BASE_SPEC, SPACE, TARGET = WORKLOADS[WORKLOAD]
EPOCHS = BASE_SPEC["train"]["epochs"]
MIN_EPOCHS = 1          # both pruners: epochs before a trial may be stopped
REDUCTION_FACTOR = 3    # both pruners: 1 trial in this many goes on at each rung
RAY_CONCURRENCY = 2     # trials Ray Tune runs at once (1 CPU each)

Report = Callable[[int, float], bool]


def space() -> dict:
    """SPACE as validated elastrain ParamSpec objects ({spec field path: ParamSpec})."""
    from elastrain.spec.tune import TuneSpec

    return TuneSpec.model_validate({"space": SPACE}).space


def import_training() -> None:
    """Import what :func:`train_trial` needs (torch and elastrain take seconds), so that a clock
    started after this call does not count it."""
    import elastrain.data.dataset
    import elastrain.sdk
    import elastrain.train.trainer  # noqa: F401


def train_trial(params: dict[str, Any], report: Report) -> float:
    """Train BASE_SPEC with `params` ({spec field path: value}) in this process, with elastrain's
    Trainer as its training loop drives it (one step at a time, evaluating after every epoch).

    After every epoch, calls `report(epoch, validation accuracy)` (epoch 1-based); when that
    returns True, stops there (the trial is pruned; the caller raises what its tuner needs).
    The dataset is prepared for each trial (a few milliseconds on digits), on every side alike.

    Returns:
        The validation accuracy of the last epoch trained.

    Raises:
        elastrain.errors.TrainingDiverged: the loss became NaN or infinite (the trial failed).
    """
    import elastrain
    from elastrain.data import prepare_dataset
    from elastrain.train.trainer import Trainer

    spec = elastrain.Job(BASE_SPEC, overrides=params).spec
    trainer = Trainer(spec, prepare_dataset(spec))
    accuracy = math.nan
    while not trainer.done:
        if not trainer.train_step().epoch_done:
            continue
        metrics = trainer.evaluate()
        trainer.record_evaluation(metrics)
        accuracy = float(metrics["accuracy"])
        if report(trainer.epoch, accuracy):
            break
    return accuracy


def cpu_busy(before: Any, after: Any) -> float:
    """The fraction (0..1) of the machine's CPU time, all cores together, that was not idle (nor
    waiting for I/O) between two `psutil.cpu_times()` snapshots."""
    def idle(times: Any) -> float:
        return times.idle + getattr(times, "iowait", 0.0)

    total = sum(after) - sum(before)
    return round(1.0 - (idle(after) - idle(before)) / total, 4) if total > 0 else 0.0


def run_optuna_alone(seed: int, n_trials: int, target: float) -> dict:
    """Optuna by itself: TPE (seeded) and successive halving (min resource MIN_EPOCHS epochs,
    REDUCTION_FACTOR), one trial at a time in this process, in-memory storage, maximizing the
    validation accuracy; a diverged trial fails and the study goes on. The clock starts after
    torch and elastrain are imported.

    Returns:
        {"system": "optuna", "seed", "time_to_target_s" (None if never reached), "best_accuracy",
        "trials" (finished), "pruned", "failed", "wall_s", "cpu_busy", "torch_threads",
        "finished"} (see the module's docstring for how times are counted).
    """
    import optuna
    import torch

    from elastrain.errors import TrainingDiverged
    from elastrain.tune.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import_training()
    params_space = space()
    reports: list[tuple[float, float]] = []    # (time since start, accuracy) of every epoch
    finished: list[dict] = []
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_EPOCHS,
                                                                              reduction_factor=REDUCTION_FACTOR))

    def objective(trial: optuna.Trial) -> float:
        stopped = False

        def report(epoch: int, accuracy: float) -> bool:
            nonlocal stopped
            reports.append((time.perf_counter() - began, accuracy))
            trial.report(accuracy, epoch)
            stopped = trial.should_prune()
            return stopped

        accuracy = train_trial(suggest(trial, params_space), report)
        if stopped:
            raise optuna.TrialPruned()
        return accuracy

    def on_finished(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished.append({"t": round(time.perf_counter() - began, 3), "state": trial.state.name.lower(),
                         "best": max((a for _, a in reports), default=None)})

    cpu_before = psutil.cpu_times()
    began = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, n_jobs=1, catch=(TrainingDiverged,), callbacks=[on_finished])
    wall = time.perf_counter() - began
    states = [t.state for t in study.trials]
    return {"system": "optuna", "seed": seed, **_reached(reports, target), "trials": len(finished),
            "pruned": states.count(optuna.trial.TrialState.PRUNED),
            "failed": states.count(optuna.trial.TrialState.FAIL), "wall_s": round(wall, 3),
            "cpu_busy": cpu_busy(cpu_before, psutil.cpu_times()), "torch_threads": torch.get_num_threads(),
            "finished": finished}


def _define_by_run(trial: Any) -> dict[str, Any]:
    """OptunaSearch's define-by-run space: SPACE sampled by elastrain's `suggest`, whose values
    (lists too) become the trial's config. A module function, as Tune pickles its searcher."""
    from elastrain.tune.space import suggest

    return suggest(trial, space())


def _ray_trainable(config: dict) -> None:
    """A Ray Tune function trainable: one trial, reporting each epoch's accuracy (with the
    worker's wall time and torch thread count); ASHA stops the actor to prune it."""
    import torch
    from ray import tune

    def report(epoch: int, accuracy: float) -> bool:
        tune.report({"accuracy": accuracy, "epoch": epoch, "reported_at": time.time(),
                     "torch_threads": torch.get_num_threads()})
        return False

    train_trial(config, report)


def run_ray_tune_asha(seed: int, n_trials: int, target: float) -> dict:
    """Ray Tune: ASHA (max_t EPOCHS epochs, grace MIN_EPOCHS, REDUCTION_FACTOR) over OptunaSearch
    (TPE, seeded; the same define-by-run space) under a ConcurrencyLimiter of RAY_CONCURRENCY
    trials, 1 CPU each, `n_trials` samples, results under a fresh temporary folder. Starts Ray
    (2 CPUs, no dashboard) if it is not running, and leaves it running.

    Returns:
        The dict of :func:`run_optuna_alone` with "system": "ray_tune", plus "startup_s" (the
        ray.init this call made, 0 if Ray was running); times count from the start of
        `Tuner.fit()`, each report at the time its trial made it.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    startup = 0.0
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no network
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - started
    searcher = OptunaSearch(space=_define_by_run, metric="accuracy", mode="max", seed=seed)
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="accuracy", mode="max", max_t=EPOCHS,
                              grace_period=MIN_EPOCHS, reduction_factor=REDUCTION_FACTOR)
    recorder = _recorder()
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as storage:
        tuner = tune.Tuner(
            tune.with_resources(_ray_trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=RAY_CONCURRENCY),
                                        scheduler=scheduler, num_samples=n_trials),
            run_config=tune.RunConfig(name=f"ray-tune-seed{seed}", storage_path=storage, verbose=0,
                                      callbacks=[recorder]),
        )
        cpu_before = psutil.cpu_times()
        began_wall, began = time.time(), time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - began
        cpu = cpu_busy(cpu_before, psutil.cpu_times())
    reports = [(at - began_wall, accuracy) for at, accuracy in recorder.reports]
    finished = [{"t": round(at - began, 3), "state": state,
                 "best": max((a for t, a in reports if t <= at - began), default=None)}
                for at, state in recorder.finished]
    epochs = [r.metrics.get("training_iteration", 0) for r in results if r.error is None]
    return {"system": "ray_tune", "seed": seed, **_reached(reports, target), "trials": len(results),
            "pruned": sum(1 for e in epochs if e < EPOCHS), "failed": results.num_errors, "wall_s": round(wall, 3),
            "cpu_busy": cpu, "torch_threads": recorder.threads, "startup_s": round(startup, 3), "finished": finished}


def _recorder() -> Any:
    """A Ray Tune callback that keeps every epoch report as (the trial's wall time, accuracy) in
    `reports`, every trial's end as (this process's perf_counter time, state) in `finished`, and
    the torch thread count the trials reported in `threads`."""
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.reports: list[tuple[float, float]] = []
            self.finished: list[tuple[float, str]] = []
            self.threads: int | None = None

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.reports.append((result["reported_at"], result["accuracy"]))
            self.threads = result.get("torch_threads", self.threads)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epochs = (trial.last_result or {}).get("training_iteration", 0)
            self.finished.append((time.perf_counter(), "complete" if epochs >= EPOCHS else "pruned"))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished.append((time.perf_counter(), "failed"))

    return Recorder()


def _reached(reports: list[tuple[float, float]], target: float) -> dict:
    """{"time_to_target_s", "best_accuracy"} from (seconds since the start, accuracy) reports."""
    ordered = sorted(reports)
    first = next((t for t, accuracy in ordered if accuracy >= target), None)
    return {"time_to_target_s": None if first is None else round(first, 3),
            "best_accuracy": max((a for _, a in ordered), default=None)}


RUNNERS = {"optuna": run_optuna_alone, "ray_tune": run_ray_tune_asha}


def main() -> None:
    """Run one peer once and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--trials", type=int, default=20, help="trials to finish (completed or pruned)")
    parser.add_argument("--target", type=float, default=TARGET, help="validation accuracy to reach")
    options = parser.parse_args()
    print(json.dumps(RUNNERS[options.system](options.seed, options.trials, options.target)))


if __name__ == "__main__":
    main()
