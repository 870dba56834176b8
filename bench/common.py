"""What every benchmark shares: the workload, the machine description, medians, the JSON report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# The workload both sides train: an MLP 64-1024-512-10 on scikit-learn's digits, Adam,
# global batch 64 (the demo's model).
HIDDEN = (1024, 512)
BATCH = 64
LR = 0.001


def elastrain_spec(workers: int, max_steps: int, every_steps: int | None = None, min_workers: int | None = None):
    """The benchmark workload as an elastrain job spec."""
    from elastrain.spec import validate_spec

    return validate_spec({
        "name": "bench",
        "data": {"source": "builtin:digits"},
        "model": {"kind": "mlp", "hidden": list(HIDDEN)},
        "train": {"optimizer": "adam", "lr": LR, "batch_size": BATCH, "max_steps": max_steps, "seed": 0},
        "resources": {"workers": {"min": min_workers or workers, "max": workers}, "cpus_per_worker": 0.5},
        "checkpoint": {"every_steps": every_steps},
    }, "bench")


def machine() -> dict:
    """Cores, versions and platform of this run."""
    import ray
    import torch

    return {"cores": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def median(values: list[float]) -> float:
    """The median, rounded for reports."""
    return round(statistics.median(values), 4)


def arguments(description: str, steps: int, repetitions: int = 3) -> argparse.Namespace:
    """Common options: --repetitions, --steps, --save (also write bench/results/NAME.json)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=repetitions, help="interleaved runs of each side")
    parser.add_argument("--steps", type=int, default=steps, help="training steps of each run")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    return parser.parse_args()


def report(name: str, figures: dict, save: bool) -> None:
    """Print the figures (with the machine) as the last line; with `save`, write them to bench/results."""
    figures = {"benchmark": name, **figures, "machine": machine()}
    line = json.dumps(figures)
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(line + "\n")
    sys.stdout.flush()
    print(line)


def start_ray() -> None:
    """One embedded Ray for all of a benchmark's runs, started as `elastrain run` starts it."""
    from elastrain.elastic.connect import connect_ray

    connect_ray(None)
