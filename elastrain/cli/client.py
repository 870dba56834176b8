"""What the client commands print: a server's jobs, logs, metrics and models."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.table import Table

from elastrain.cli.remote import Remote

ENDED = ("succeeded", "failed", "cancelled")
FOLLOW_POLL_S = 1.0


def show_job(console: Console, remote: Remote, job_id: str, as_json: bool) -> None:
    """One job: state, workers, metrics."""
    job = remote.call("GET", f"/jobs/{job_id}")
    if as_json:
        print(json.dumps(job))
        return
    console.print(f"[bold]{job['job_id']}[/bold] {job['status']}  (owner {job['owner']})", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("workers", str(job["workers"]))
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
    table = Table(title=f"{len(page['jobs'])} of {page['total']} jobs", title_justify="left")
    table.add_column("job", overflow="fold")   # ids are long; never cut them
    for heading in ("status", "workers", "submitted", "val_accuracy / val_r2"):
        table.add_column(heading)
    for job in page["jobs"]:
        headline = job["metrics"].get("val_accuracy", job["metrics"].get("val_r2"))
        table.add_row(job["job_id"], job["status"], str(job["workers"]), job["submitted_at"][:19],
                      "" if headline is None else f"{headline:.4f}")
    console.print(table)


def print_logs(remote: Remote, job_id: str, follow: bool) -> None:
    """The job's log; with `follow`, keep printing until the job ends."""
    offset = 0
    while True:
        chunk = remote.call("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["offset"]
        if chunk["text"]:
            continue
        if not follow or remote.call("GET", f"/jobs/{job_id}")["status"] in ENDED:
            return
        time.sleep(FOLLOW_POLL_S)


def show_metrics(console: Console, remote: Remote, job_id: str, as_json: bool) -> None:
    """A server job's metric series; see :func:`print_metrics`."""
    print_metrics(console, job_id, remote.call("GET", f"/jobs/{job_id}/metrics"), as_json)


def print_metrics(console: Console, job_id: str, series: dict[str, list[dict]], as_json: bool) -> None:
    """Metric series ({name: [{step, epoch, value, t}]}), one row per epoch (a series with several
    points in an epoch, as the training loss has, shows their mean); --json gives every point."""
    if as_json:
        print(json.dumps({"job_id": job_id, "series": series}))
        return
    names = sorted(series)
    table = Table("epoch", "step", *names, title=job_id, title_justify="left")
    values: dict[int, dict[str, list[float]]] = {}
    steps: dict[int, int] = {}
    for name in names:
        for point in series[name]:
            values.setdefault(point["epoch"], {}).setdefault(name, []).append(point["value"])
            steps[point["epoch"]] = max(steps.get(point["epoch"], 0), point["step"])
    for epoch in sorted(values):
        row = values[epoch]
        table.add_row(str(epoch), str(steps[epoch]),
                      *(f"{sum(row[n]) / len(row[n]):.4f}" if n in row else "" for n in names))
    console.print(table)


def list_models(console: Console, remote: Remote, as_json: bool) -> None:
    """Registered model versions."""
    models = remote.call("GET", "/models")
    if as_json:
        print(json.dumps({"models": models}))
        return
    table = Table("name", "version", "job", "val_accuracy / val_r2", "data fingerprint", "path")
    for model in models:
        headline = model["metrics"].get("val_accuracy", model["metrics"].get("val_r2"))
        table.add_row(model["name"], str(model["version"]), model["job_id"] or "",
                      "" if headline is None else f"{headline:.4f}", model["data_fingerprint"][:12], model["url"])
    console.print(table)
