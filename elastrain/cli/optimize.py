"""`elastrain optimize`: quantize, prune and export a trained model, measured; ship the fastest
candidate that keeps accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from elastrain.optimize.report import DEFAULT_MAX_DROP_PT

if TYPE_CHECKING:
    from elastrain.optimize.report import OptimizeReport

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def optimize(
    model: Annotated[str, typer.Argument(
        help="The model: a model directory (the model_path of a run), or a registered one: NAME, NAME:VERSION or "
             "NAME@ALIAS, which then gets the shipped model as its next version.", show_default=False)],
    quantize: Annotated[str, typer.Option(
        "--quantize", metavar="MODE",
        help="auto: try every int8 candidate (ONNX Runtime dynamic and static QDQ, torchao); int8-dynamic; "
             "int8-static; none. Float32 ONNX is always tried.")] = "auto",
    calibration: Annotated[int, typer.Option(
        "--calibration", metavar="N", help="Training samples static quantization calibrates on.")] = 256,
    prune: Annotated[float | None, typer.Option(
        "--prune", metavar="RATIO", help="Also try structured pruning: remove this share of each layer's channels "
        "and hidden units (torch-pruning), fine-tune, then the same ONNX forms.", show_default=False)] = None,
    structured: Annotated[bool, typer.Option(
        "--structured", help="Pruning removes whole channels and units (always: zeroed weights make a model "
        "neither smaller nor faster on a CPU).")] = True,
    fine_tune_epochs: Annotated[int, typer.Option(
        "--fine-tune", metavar="EPOCHS", help="Epochs a pruned model trains after pruning.")] = 3,
    export: Annotated[str | None, typer.Option(
        "--export", metavar="FORMAT", help="onnx: ship an ONNX model even if no candidate beats float32.",
        show_default=False)] = None,
    max_drop: Annotated[float, typer.Option(
        "--max-drop", metavar="POINTS", help="Accuracy (or R²) the shipped model may lose, in percentage "
        "points.")] = DEFAULT_MAX_DROP_PT,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="The job spec the model was trained by (default: the one it records).",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where the shipped model goes (default: beside the model, MODEL-CANDIDATE).",
        show_default=False)] = None,
    latency_s: Annotated[float, typer.Option(
        "--latency-s", metavar="S", help="Seconds of calls each latency figure is measured over.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Make a trained model smaller and faster for CPU inference, and measure it.

    Builds the candidates (float32 ONNX; int8 by ONNX Runtime dynamic and static QDQ quantization
    and by torchao; structured pruning with --prune), measures each on the model's own validation
    split (file size, latency p50/p99 at batch 1 and 64, throughput, accuracy), and ships the
    fastest at batch 64 that loses at most --max-drop points and is not slower at batch 1: on a
    small model int8 often is not faster, so nothing is assumed. Exit code 0; 2 for bad input.
    """
    from elastrain.extras import require
    from elastrain.optimize.run import OptimizeOptions, optimize_model
    from elastrain.spec import load_spec

    require("onnx", "onnxscript", "onnxruntime", "torchao", "torch_pruning", where="elastrain optimize")

    del structured   # the only kind there is; the flag is accepted as the command line writes it
    options = OptimizeOptions(quantize=quantize, calibration=calibration, prune=prune,
                              fine_tune_epochs=fine_tune_epochs, export=export, max_drop_pt=max_drop,
                              latency_s=latency_s)
    job = load_spec(spec) if spec else None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("loading the model")
        report = optimize_model(model, options, output, job, lambda step: bar.update(task, description=step))
    print_report(report, err if as_json else out)
    if as_json:
        print(json.dumps(report.summary()))


def print_report(report: OptimizeReport, console: Console) -> None:
    """The candidates as a table (the shipped one in bold), the choice and where it went."""
    base = report.candidates[0]
    table = Table(box=box.SIMPLE_HEAD, title=f"{escape(report.source)} ({report.validation_rows} validation rows)")
    for column in ("candidate", "size", "x fp32", "p50 / p99 ms b1", "p50 / p99 ms b64", "samples/s",
                   base.metric, "drop pt", "max |diff|"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for r in report.candidates:
        table.add_row(r.name + (" (shipped)" if r.name == report.shipped else ""), _size(r.size_bytes),
                      f"{r.size_bytes / base.size_bytes:.2f}", f"{r.p50_ms_b1:.3f} / {r.p99_ms_b1:.3f}",
                      f"{r.p50_ms_b64:.3f} / {r.p99_ms_b64:.3f}", f"{r.samples_per_s:,.0f}", f"{r.value:.4f}",
                      f"{r.drop_pt:+.2f}", f"{r.max_abs_diff:.2g}", style="bold" if r.name == report.shipped else None)
    console.print(table)
    console.print(f"shipped [bold]{report.shipped}[/bold]: {escape(report.reason)}", soft_wrap=True)
    if report.model_path:
        console.print(f"saved to {escape(report.model_path)}", soft_wrap=True)
    if report.registered:
        console.print(f"registered as {escape(report.registered)}", soft_wrap=True)


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 2**20 else f"{size / 2**20:.2f} MiB"
