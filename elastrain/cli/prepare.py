"""`elastrain prepare`: fit a job's preprocessing on its raw table on Ray Data and write
model-ready shards (see `elastrain.prep.run`)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from elastrain import paths

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def prepare(
    spec_file: Annotated[Path, typer.Argument(help="The job spec (YAML); data.source names the raw table "
                                              "(csv:, parquet: or jsonl: with a file, a glob or a URL).",
                                              show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the shards, preprocessing.json and "
                                          "manifest.json into (created if needed; earlier shards there are "
                                          "replaced).", show_default=False)],
    workers: Annotated[int | None, typer.Option(help="Ray Data tasks reading and transforming at once (a task "
                                                "reads one file: give a large table as several files).",
                                                show_default="Ray Data's choice")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="FIELD=VALUE", help="Override a spec field, e.g. --set data.validation_fraction=0.1.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as one JSON object, last.")] = False,
) -> None:
    """Fit the preprocessing of a job's raw table on its training rows and write model-ready
    training and validation shards, in one distributed pass on Ray Data (an embedded Ray, or the
    cluster at RAY_ADDRESS).

    Numeric columns are standardized, categorical ones one-hot encoded, text columns become token
    ids (a tokenizer trained on the data; Chinese segmented with jieba); data.columns declares a
    column's type and what a blank becomes (error, mean, most_frequent or a level of its own). A
    job then trains on the folder with data.source: prepared:DIR; `elastrain run` and the server
    prepare a job's raw table themselves when its data.columns or data.validation_source says how
    (the folder kept under ELASTRAIN_HOME/prepared and reused while data and declarations stay).
    The same input gives the same shards whatever the number of workers. Exit code 2 when the
    spec or the data is wrong (a blank where a column's policy is error names its file and line).
    """
    from elastrain.elastic.connect import connect_ray
    from elastrain.prep.run import prepare as run_prepare
    from elastrain.spec import load_spec

    spec = load_spec(spec_file, overrides or [])
    if not os.environ.get(paths.VERBOSE):   # Ray Data's own messages only with --verbose
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    connected = connect_ray(os.environ.get("RAY_ADDRESS"))
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,.0f} rows"), TimeElapsedColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), console=err, transient=True, disable=not sys.stderr.isatty()) as bar:
            tasks: dict[str, int] = {}

            def advance(what: str, rows: int, total: int | None) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=total)
                bar.advance(tasks[what], rows)

            manifest, plan = run_prepare(spec, out_dir, workers, advance)
    finally:
        if connected:
            import ray

            ray.shutdown()
    table = Table(box=box.SIMPLE_HEAD, title=f"prepared into {out_dir}")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("rows in", f"{manifest.rows_in:,}")
    table.add_row("training rows", f"{sum(manifest.train_rows):,} in {len(manifest.train)} shards")
    table.add_row("validation rows", f"{sum(manifest.validation_rows):,}")
    for reason, rows in manifest.dropped.items():
        table.add_row(f"dropped: {reason}", f"{rows:,}")
    for fit in plan.categorical:
        table.add_row(f"levels of {fit.name}", f"{len(fit.levels)}")
    for fit in plan.text:
        table.add_row(f"vocabulary of {fit.name}", f"{fit.vocabulary:,} ({fit.segment} segmentation, "
                                                   f"{fit.max_length} ids a text)")
    table.add_row("features", f"{len(manifest.features)}")
    table.add_row("task", manifest.task + (f" ({len(plan.classes)} classes)" if plan.classes else ""))
    table.add_row("time", f"{manifest.fit_s:.1f} s fitting, {manifest.write_s:.1f} s writing")
    (err if as_json else out).print(table)
    if as_json:
        print(json.dumps(json.loads(manifest.to_json())))
