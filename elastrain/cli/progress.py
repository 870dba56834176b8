"""A Rich progress bar for a training job, drawn on stderr."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.status import Status

HEADLINE_METRICS = ("accuracy", "f1_macro", "mse", "r2")


class RichProgress:
    """Shows what a job is doing until it trains (a spinner: starting Ray, loading data, starting
    workers, waiting for resources), then steps done, time left, the loss and the workers, and a
    line of validation metrics per epoch. On a console that is not a terminal only the lines are
    printed."""

    def __init__(self, console: Console, name: str, job_id: str | None = None) -> None:
        self.name = name
        self.job_id = job_id   # announced when the job starts, for `status` / `scale` from another terminal
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[workers]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self.spinner: Status | None = None
        self.task = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_spinner()
        if self.task is not None:
            self.bar.stop()

    def phase(self, text: str) -> None:
        """Show what the job is doing before its first step (in place of the loss)."""
        if self.task is not None:
            self.bar.update(self.task, description=f"{self.name}: {text}")
        elif self.spinner is None:
            self.spinner = self.bar.console.status(f"{self.name}: {text}")
            self.spinner.start()
        else:
            self.spinner.update(f"{self.name}: {text}")

    def _stop_spinner(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def start(self, total_steps: int, steps_per_epoch: int) -> None:
        """Open the bar for a job of `total_steps` steps (drawn only once the job has started,
        so a job that fails on bad input prints nothing but its error)."""
        self._stop_spinner()
        self.bar.start()
        self.task = self.bar.add_task(self.name, total=total_steps, loss="", workers="")

    def advance(self, step: int, loss: float, workers: int) -> None:
        """Show the steps completed so far, the latest loss and the worker count; the job id once,
        with the first report (a job that never starts prints only its error)."""
        if self.job_id:
            self.bar.console.print(f"job {self.job_id} (from another terminal: elastrain status {self.job_id})",
                                   soft_wrap=True, highlight=False)
            self.job_id = None
        trained = step > 0 and math.isfinite(loss)
        self.bar.update(self.task, completed=step, description=self.name if trained else None,
                        loss=f"loss {loss:.4g}" if trained else "",
                        workers=f"{workers} worker{'s' if workers != 1 else ''}" if workers else "")

    def epoch(self, epoch: int, metrics: dict) -> None:
        """Log the validation metrics of a finished epoch above the bar."""
        shown = "  ".join(f"val_{k} {metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics)
        self.bar.console.log(f"epoch {epoch}  {shown}")

    def warn(self, message: str) -> None:
        """Show a warning above the bar."""
        self.bar.console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)
