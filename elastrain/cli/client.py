"""What the client commands print: a server's jobs, logs, metrics and models."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from elastrain.cli.tables import print_table
from elastrain.client import Remote
from elastrain.runs import JobState

# The series `metrics` shows at a terminal (all of them go to a pipe and to --json).
TERMINAL_SERIES = ("train_loss", "val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro",
                   "val_mse", "val_r2")
FOLLOW_POLL_S = 1.0


def show_job(console: Console, remote: Remote, job_id: str, as_json: bool) -> None:
    """A server's job as `status` shows a local run (workers, step, epoch, throughput, time
    left, events), then its owner, message and validation metrics. --json: the job's record
    with `progress`, the status and events shown."""
    from elastrain.cli.status import print_status

    job = remote.call("GET", f"/jobs/{job_id}")
    snapshot = {**remote.call("GET", f"/jobs/{job_id}/status"), "events": remote.call("GET", f"/jobs/{job_id}/events")}
    if as_json:
        print(json.dumps({**job, "progress": snapshot}))
        return
    print_status(console, snapshot)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("owner", job["owner"])
    for name, value in job["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    if job["message"]:
        table.add_row("message", job["message"])
    console.print(table)


def list_jobs(console: Console, remote: Remote, status: str | None, limit: int, as_json: bool) -> None:
    """A page of a server's jobs."""
    params = {"limit": limit, **({"status": status} if status else {})}
    print_jobs(console, remote.call("GET", "/jobs", params=params), as_json)


def print_jobs(console: Console, page: dict, as_json: bool) -> None:
    """A page of jobs ({jobs: [{job_id, status, workers, submitted_at, metrics}], total}) as a
    table, or as one JSON line."""
    if as_json:
        print(json.dumps(page))
        return
    rows = []
    for job in page["jobs"]:
        headline = job["metrics"].get("val_accuracy", job["metrics"].get("val_r2"))
        rows.append([job["job_id"], job["status"], str(job["workers"]), age(job["submitted_at"]),
                     "" if headline is None else f"{headline:.4f}"])
    print_table(console, ["job", "status", "workers", "age", "acc / r2"], rows, keep=[0],
                title=f"{len(page['jobs'])} of {page['total']} jobs")


def age(timestamp: str) -> str:
    """How long ago an ISO 8601 instant was, as kubectl shows it: 45s, 12m, 3h, 5d."""
    instant = datetime.fromisoformat(timestamp)
    if instant.tzinfo is None:   # the store's timestamps are UTC
        instant = instant.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - instant).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_logs(remote: Remote, job_id: str, follow: bool, as_json: bool) -> None:
    """A server job's log; see :func:`follow_log`."""
    def read(offset: int) -> tuple[str, int]:
        chunk = remote.call("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
        return chunk["text"], chunk["offset"]

    follow_log(job_id, read, lambda: JobState(remote.call("GET", f"/jobs/{job_id}")["status"]).is_final, follow,
               as_json)


def follow_log(job_id: str, read: Callable[[int], tuple[str, int]], ended: Callable[[], bool], follow: bool,
               as_json: bool) -> None:
    """Print a job's log as `read(offset) -> (text, next offset)` gives it; with `follow`, keep
    printing until `ended()`; with `as_json`, one JSON object ({job_id, text}) once it is read."""
    offset, text = 0, []
    while True:
        chunk, offset = read(offset)
        if as_json:
            text.append(chunk)
        else:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        if chunk:
            continue
        if not follow or ended():
            break
        time.sleep(FOLLOW_POLL_S)
    if as_json:
        print(json.dumps({"job_id": job_id, "text": "".join(text)}))


def show_metrics(console: Console, remote: Remote, job_id: str, as_json: bool) -> None:
    """A server job's metric series; see :func:`print_metrics`."""
    print_metrics(console, job_id, remote.call("GET", f"/jobs/{job_id}/metrics"), as_json)


def print_metrics(console: Console, job_id: str, series: dict[str, list[dict]], as_json: bool) -> None:
    """Metric series ({name: [{step, epoch, value, t}]}), one row per epoch (a series with several
    points in an epoch, as the training loss has, shows their mean); --json gives every point.
    A terminal shows the training loss and the macro-averaged validation metrics (`TERMINAL_SERIES`),
    a pipe every series."""
    if as_json:
        print(json.dumps({"job_id": job_id, "series": series}))
        return
    names = sorted(series)
    if console.is_terminal:
        names = [name for name in TERMINAL_SERIES if name in series]
    values: dict[int, dict[str, list[float]]] = {}
    steps: dict[int, int] = {}
    for name in names:
        for point in series[name]:
            values.setdefault(point["epoch"], {}).setdefault(name, []).append(point["value"])
            steps[point["epoch"]] = max(steps.get(point["epoch"], 0), point["step"])
    rows = [[str(epoch), str(steps[epoch]),
             *(f"{sum(values[epoch][n]) / len(values[epoch][n]):.4f}" if n in values[epoch] else "" for n in names)]
            for epoch in sorted(values)]
    headers = [name.removeprefix("val_") for name in names] if console.is_terminal else names
    print_table(console, ["epoch", "step", *headers], rows,
                title=f"{job_id}: validation metrics per epoch (every series: --json)")


def list_models(console: Console, remote: Remote, as_json: bool) -> None:
    """A server's registered model versions; see :func:`print_models`."""
    print_models(console, remote.call("GET", "/models"), as_json)


def print_models(console: Console, models: list[dict], as_json: bool) -> None:
    """Model versions (as the API's JSON has them) as a table: name, version, aliases, headline
    metric, the version it was derived from, size, job, path; or as one JSON line."""
    if as_json:
        print(json.dumps({"models": models}))
        return
    rows = []
    for model in models:
        headline = model["metrics"].get("val_accuracy", model["metrics"].get("val_r2"))
        parent = model.get("parent_version")
        rows.append([model["name"], str(model["version"]), ", ".join(model.get("aliases", [])),
                     "" if headline is None else f"{headline:.4f}", "" if parent is None else str(parent),
                     human_size(model.get("size_bytes")), model["job_id"] or "", model["url"]])
    print_table(console, ["name", "version", "aliases", "acc / r2", "parent", "size", "job", "path"], rows,
                keep=[7])


def human_size(size: int | None) -> str:
    """A byte count as people read it: 812 B, 4.2 KiB, 1.3 MiB ('' when unknown)."""
    if size is None:
        return ""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"
