"""Time to a target validation accuracy: an elastrain study against Optuna alone and Ray Tune ASHA.

    python -m bench.tune [--workload digits|mnist] [--seeds 0 1 2] [--trials 48] [--target T] [--save]

The same job (an MLP on scikit-learn's digits, 20 epochs, target 0.975; or with --workload mnist
the CNN of examples/cnn_mnist.yaml on the MNIST test set in datasets/, 8 epochs, target 0.985),
the same 4-parameter space, the same
TPE seeds, trial budget and pruning (successive halving from 1 epoch, reduction factor 3) on each
side (see bench/tune_peers.py); each seed runs the three systems one after the other. Times count
from the start of the search to the first epoch report, by any trial, at or above the target (Ray
is started before the clock on both Ray sides, and its start is reported as startup_s). Figures
are medians over the seeds. Besides them: the machine's busy CPU share during elastrain's study
(`cpu_busy`), and `regrow_s`: the longest time, over the study, from a trial's end to a running
trial's first step on the workers it freed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import report, start_ray

ENDS = ("succeeded", "cancelled", "failed")   # a trial's last event


def run_elastrain(seed: int, n_trials: int, target: float) -> dict:
    """One elastrain study (trials as elastic jobs of 1..2 workers on this machine's Ray); the
    figures of `bench.tune_peers` plus `regrow_s`."""
    from bench.tune_peers import BASE_SPEC, MIN_EPOCHS, REDUCTION_FACTOR, SPACE, cpu_busy
    from elastrain.runs import RunFolder
    from elastrain.tune.study import Study

    tune = {"space": SPACE, "sampler": "tpe", "seed": seed, "pruner": "asha", "min_epochs": MIN_EPOCHS,
            "reduction_factor": REDUCTION_FACTOR, "n_trials": n_trials, "metric": "val_accuracy"}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as home:
        study = Study(BASE_SPEC, tune=tune, name=f"bench-seed{seed}", home=home,
                      storage=f"sqlite:///{home}/studies.db")
        cpu_before = psutil.cpu_times()
        began = time.time()
        result = study.optimize(plots=Path(home) / "plots")
        wall = time.time() - began
        cpu = cpu_busy(cpu_before, psutil.cpu_times())
        folders = [RunFolder.of(Path(home), record.job_id) for record in result.table if record.job_id]
        reports = [(point["t"] - began, point["value"]) for folder in folders
                   for point in folder.read_metrics().get("val_accuracy", [])]
        events = [(folder.job_id, event) for folder in folders for event in folder.read_events()]
    first = min((t for t, accuracy in reports if accuracy >= target), default=None)
    return {"system": "elastrain", "seed": seed, "time_to_target_s": None if first is None else round(first, 3),
            "best_accuracy": max((a for _, a in reports), default=None), "trials": result.trials,
            "pruned": result.pruned, "failed": result.failed, "wall_s": round(wall, 3), "cpu_busy": cpu,
            "worker_s": result.worker_s, "regrow_s": _regrow(events)}


def _regrow(events: list[tuple[str, dict]]) -> float | None:
    """The longest wait from a trial's end to another trial's first step after growing (its
    scale_out event marks the step), over the study; None if no trial grew."""
    ends = sorted((event["t"], job_id) for job_id, event in events if event["kind"] in ENDS)
    waits = []
    for job_id, event in events:
        if event["kind"] != "scale_out":
            continue
        before = [t for t, ended in ends if t <= event["t"] and ended != job_id]
        if before:
            waits.append(event["t"] - before[-1])
    return round(max(waits), 3) if waits else None


def _median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--workload", choices=("digits", "mnist"), default="digits",
                        help="digits: an MLP on scikit-learn's digits; mnist: a CNN on the MNIST test set in datasets/")
    parser.add_argument("--target", type=float, default=None, help="validation accuracy to reach "
                                                                   "(default: 0.975 digits, 0.985 mnist)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    options = parser.parse_args()
    os.environ["BENCH_TUNE_WORKLOAD"] = options.workload   # before Ray starts: its trial processes read it
    from bench.tune_peers import EPOCHS, MNIST, TARGET, import_training, run_optuna_alone, run_ray_tune_asha

    if options.workload == "mnist" and not MNIST.is_dir():
        raise SystemExit(f"the MNIST test set is not at {MNIST}: --workload mnist needs it")
    options.target = options.target or TARGET

    import_training()
    start_ray()
    runs: dict[str, list[dict]] = {"elastrain": [], "optuna": [], "ray_tune": []}
    for seed in options.seeds:
        runs["optuna"].append(run_optuna_alone(seed, options.trials, options.target))
        runs["ray_tune"].append(run_ray_tune_asha(seed, options.trials, options.target))
        runs["elastrain"].append(run_elastrain(seed, options.trials, options.target))
        for system, done in runs.items():
            shown = {k: v for k, v in done[-1].items() if k != "finished"}
            print(f"seed {seed} {system}: {shown}", flush=True)
    ours, optuna, ray_tune = (_median(runs[s], "time_to_target_s") for s in ("elastrain", "optuna", "ray_tune"))
    best = {system: max((r["best_accuracy"] or 0) for r in done) for system, done in runs.items()}
    report("tune" if options.workload == "digits" else f"tune_{options.workload}", {
        "workload": f"{options.workload}, {EPOCHS} epochs, 4 parameters, {options.trials} trials",
        "target": options.target,
        "seeds": options.seeds,
        "time_to_target_s": {"elastrain": ours, "optuna": optuna, "ray_tune": ray_tune},
        "speedup_vs_optuna": round(optuna / ours, 3) if ours and optuna else None,
        "speedup_vs_ray_tune": round(ray_tune / ours, 3) if ours and ray_tune else None,
        "best_accuracy": best["elastrain"], "peer_best_accuracy": max(best["optuna"], best["ray_tune"]),
        "cpu_busy": _median(runs["elastrain"], "cpu_busy"), "regrow_s": _median(runs["elastrain"], "regrow_s"),
        "wall_s": {system: _median(done, "wall_s") for system, done in runs.items()},
        "runs": {system: [{k: v for k, v in run.items() if k != "finished"} for run in done]
                 for system, done in runs.items()},
    }, options.save)


if __name__ == "__main__":
    main()
