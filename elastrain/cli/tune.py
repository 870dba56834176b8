"""`elastrain tune`: a hyperparameter study over a job, its trials elastic jobs on one pool of workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from elastrain.cli.options import CaCertOption, TokenOption
from elastrain.errors import UserError

if TYPE_CHECKING:
    from elastrain.tune.study import StudyResult, TrialRecord

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class RichStudyProgress:
    """A bar of finished trials with the best value so far, and a line per trial that starts,
    grows, is pruned, completes or fails (stderr)."""

    def __init__(self, console: Console, n_trials: int, metric: str) -> None:
        self.console = console
        self.metric = metric
        self.bar = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[best]}"), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.bar.add_task("trials", total=n_trials, best="")

    def __enter__(self) -> RichStudyProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.stop()

    def trial_started(self, number: int, params: dict[str, Any], workers: int) -> None:
        shown = ", ".join(f"{path}={_short(value)}" for path, value in params.items())
        where = f"started on {workers} worker{'s' * (workers > 1)}" if workers else "queued on the server"
        self.console.print(f"trial {number} {where}: {escape(shown)}", soft_wrap=True)

    def trial_resized(self, number: int, workers: int) -> None:
        self.console.print(f"trial {number} runs on {workers} worker{'s' * (workers > 1)}")

    def trial_ended(self, record: TrialRecord, finished: int, best: float | None) -> None:
        from elastrain.tune.study import TrialStatus

        value = "" if record.value is None else f" {self.metric} {record.value:.4f}"
        reason = f": {record.message}" if record.message else ""
        where = f" at epoch {record.epochs}" if record.state is TrialStatus.PRUNED else ""
        self.console.print(f"trial {record.number} {record.state}{where}{value}{escape(reason)}", soft_wrap=True)
        self.bar.update(self.task, completed=finished, best="" if best is None else f"best {best:.4f}")


def tune(
    spec_file: Annotated[Path | None, typer.Argument(
        help="The job spec (YAML) with its `tune:` section; not needed with --resume.", show_default=False)] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="FIELD=VALUE",
        help="Override a spec field, e.g. --set tune.n_trials=40 or --set train.epochs=10 (repeatable; values "
             "are YAML).")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="STUDY",
        help="Continue the stored study STUDY (its tuner died or was stopped): finished trials are kept, trials "
             "left running are run again with the same parameters.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The study's name (default: the job's name and the time).", show_default=False)] = None,
    plots: Annotated[Path | None, typer.Option(
        "--plots", help="Folder for the PNG plots (default: ELASTRAIN_HOME/studies/STUDY).",
        show_default=False)] = None,
    server: Annotated[str | None, typer.Option(
        "--server", metavar="URL",
        help="Run the trials as jobs of this elastrain server (its scheduler sizes them among its other jobs) "
             "instead of from this process; a resumed study goes back to the server it ran on.",
        show_default=False)] = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Search a job's hyperparameters: each trial is an elastic job, and a pruned or finished
    trial's workers go to queued trials, or to the running ones, which grow in place.

    The spec's `tune:` section names the search space (spec fields by dotted path, e.g.
    train.lr), the sampler (tpe, random, grid, cmaes, gp), the pruner (asha, hyperband, median,
    none), the metric, n_trials, max_concurrent and budgets (see examples/tune_mlp_digits.yaml).
    The study is stored in the jobs' database (ELASTRAIN_DB_URL, or ELASTRAIN_HOME/elastrain.db);
    the best trial's model is registered. With --server the trials are that server's jobs and it
    registers their models. Exit code 0 when a trial completed, 1 when none did, 2 when the spec
    or its tune section is wrong.
    """
    from elastrain.client import read_token
    from elastrain.extras import require

    require("optuna", where="elastrain tune")   # before the tuner's modules, which import it
    from elastrain.tune.study import Study

    reach = {"server": server, "token": read_token(token), "ca_cert": ca_cert}

    if resume and spec_file:
        raise UserError("give either a spec file or --resume STUDY, not both", where="elastrain tune",
                        fix=f"`elastrain tune --resume {resume}` continues the stored study with its own spec")
    if resume:
        if overrides:
            raise UserError("--set does not apply to a resumed study (it keeps the spec it started with)",
                            where="--set", fix="drop --set, or start a new study from the spec file")
        study = Study.resume(resume, **reach)
    elif spec_file is None:
        raise UserError("no spec file given", where="elastrain tune",
                        fix="`elastrain tune job.yaml` (see examples/tune_mlp_digits.yaml), or --resume STUDY")
    else:
        study = Study.from_yaml(spec_file, overrides or [], name=name, **reach)
    err.print(f"study [bold]{escape(study.name)}[/bold]: {study.n_trials} trials, {study.tune.sampler} sampler, "
              f"{study.tune.pruner} pruner, {'maximize' if study.maximize else 'minimize'} {study.metric}",
              soft_wrap=True)
    with RichStudyProgress(err, study.n_trials, study.metric) as progress:
        result = study.optimize(progress, plots)
    if as_json:
        _print_table(result, err)
        print(json.dumps(result.summary()))
    else:
        _print_table(result, out)
        _print_summary(result)
    if result.best_value is None:
        raise typer.Exit(1)


def _print_table(result: StudyResult, console: Console) -> None:
    from elastrain.tune.study import TrialStatus

    table = Table(box=box.SIMPLE_HEAD, title=f"study {result.study}")
    paths = list(dict.fromkeys(path for record in result.table for path in record.params))
    for column in ("trial", "state", result.metric, "epochs", *paths):
        table.add_column(column, justify="right" if column in ("trial", result.metric, "epochs") else "left")
    for record in result.table:
        value = "" if record.value is None else f"{record.value:.4f}"
        best = record.job_id == result.best_job and record.state is TrialStatus.COMPLETE
        table.add_row(str(record.number), record.state + (" (best)" if best else ""), value, str(record.epochs),
                      *(escape(_short(record.params[path])) if path in record.params else "-" for path in paths),
                      style="bold" if best else None)
    console.print(table)


def _print_summary(result: StudyResult) -> None:
    if result.best_value is None:
        err.print(f"[red]error:[/red] no trial completed ({result.failed} failed, {result.pruned} pruned)")
        return
    out.print(f"best {result.metric} [bold]{result.best_value:.4f}[/bold] (trial job {result.best_job})",
              soft_wrap=True)
    out.print("  " + "  ".join(f"{path}={escape(_short(value))}" for path, value in result.best_params.items()),
              soft_wrap=True)
    out.print(f"model registered as {result.best_model}: {result.best_model_path}", soft_wrap=True)
    out.print(f"{result.trials} trials ({result.pruned} pruned, {result.failed} failed) in {result.wall_s:.1f} s, "
              f"{result.worker_s:.0f} worker-seconds; stopped by {result.stopped_by}")
    if result.plots:
        out.print(f"plots: {Path(result.plots[0]).parent}", soft_wrap=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)
