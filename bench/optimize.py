"""Optimize for inference, measured: the digits MLP (examples/mlp_digits.yaml) and, when
datasets/ holds MNIST, the CNN of examples/cnn_mnist.yaml are trained, then `elastrain optimize`
tries every candidate (ONNX Runtime float32, dynamic and static int8; torchao int8; 50 % structured
pruning, fine-tuned, in the same ONNX forms) and ships the fastest at batch 64 that loses at most
0.5 accuracy points and is not slower at batch 1.

Targets (issue 16): where an int8 candidate ships, <= 0.3x the float32 size; >= 1.5x faster at
batch 64 than float32 PyTorch eager; never slower at batch 1; accuracy drop <= 0.5 points.

Usage: python -m bench.optimize [--latency-seconds 2] [--save]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import common

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MNIST = Path(__file__).resolve().parents[1] / "datasets" / "mnist-t10k"


def workloads() -> dict[str, Path]:
    """The models to optimize: name -> the example spec that trains it."""
    found = {"digits_mlp": EXAMPLES / "mlp_digits.yaml"}
    if MNIST.is_dir():
        found["mnist_cnn"] = EXAMPLES / "cnn_mnist.yaml"
    else:
        print(f"the MNIST test set is not at {MNIST}: the CNN is left out", file=sys.stderr)
    return found


def figures(summary: dict) -> dict:
    """The issue's figures of one model, and which targets they meet."""
    shipped = next(c for c in summary["candidates"] if c["name"] == summary["shipped"])
    int8 = "int8" in summary["shipped"]
    return {"shipped": summary["shipped"], "size_ratio": summary["size_ratio"],
            "speedup_batch64": summary["speedup_batch64"], "speedup_batch1": summary["speedup_batch1"],
            "accuracy_drop_pt": summary["accuracy_drop_pt"], "accuracy": shipped["value"],
            "targets_met": {"size": (summary["size_ratio"] <= 0.3) if int8 else None,
                            "batch64": summary["speedup_batch64"] >= 1.5, "batch1": summary["speedup_batch1"] >= 1.0,
                            "accuracy": summary["accuracy_drop_pt"] <= 0.5},
            "candidates": {c["name"]: {"size_bytes": c["size_bytes"], "p50_ms_b1": c["p50_ms_b1"],
                                       "p50_ms_b64": c["p50_ms_b64"], "accuracy": c["value"]}
                           for c in summary["candidates"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="seconds of calls per latency figure")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    options = parser.parse_args()
    from rich.console import Console

    from elastrain.cli.optimize import print_report
    from elastrain.optimize.run import OptimizeOptions, optimize_model
    from elastrain.sdk import Job

    console = Console(stderr=True, highlight=False, width=160)
    results = {}
    with tempfile.TemporaryDirectory() as home:
        for name, spec in workloads().items():
            console.print(f"training {name} ({spec.name})")
            trained = Job.from_yaml(spec).run(home=home)
            report = optimize_model(trained.model_path, OptimizeOptions(prune=0.5, latency_s=options.latency_seconds),
                                    output=Path(home) / f"{name}-optimized")
            print_report(report, console)
            results[name] = figures(report.summary())
    common.report("optimize", {"models": results}, options.save)


if __name__ == "__main__":
    main()
