"""`elastrain status`, `scale` and `cancel` on this machine's runs: read a job's live status, ask
it to resize or stop.

A job driven by a Ray actor (`JobStatus.ray_address`) is reached through its driver on that
cluster; a job training inside a local process, through request files in its run folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from elastrain.errors import UserError
from elastrain.runs import ENDED, JobState, JobStatus, RunFolder


def job_status(home: Path, job_id: str) -> dict:
    """The job's status snapshot with its events; `state` is LOST if its driver is gone.

    Raises:
        UserError: no such job.
    """
    folder = RunFolder.find(home, job_id)
    return {**_live_status(folder).to_dict(), "events": folder.read_events()}


def _live_status(folder: RunFolder) -> JobStatus:
    """The run's status as its driver last wrote it while that driver runs on this machine, from
    its driver actor on its Ray cluster otherwise; LOST if the driver is gone."""
    status = folder.read_status() or JobStatus(folder.job_id, JobState.UNKNOWN)
    if status.state.is_final:
        return status
    if _driver_alive(status.driver_pid):   # on this machine: its status file is current
        return status
    if status.ray_address:   # perhaps on another node of its cluster: ask it there
        driver = _driver(status)
        if driver is not None:
            import ray

            return ray.get(driver.status.remote())
    return replace(status, state=JobState.LOST)


def _driver(status: JobStatus) -> object | None:
    """The job's driver actor on the Ray cluster its status names; None when that cluster or
    that actor is gone."""
    from elastrain.elastic.connect import connect_ray

    try:
        connect_ray(status.ray_address)   # before anything imports Ray (see connect_ray)
    except UserError:   # nothing answers there any more
        return None
    from elastrain.elastic.driver import find_driver

    return find_driver(status.job_id)


def local_jobs(home: Path, state: str | None, limit: int) -> dict:
    """This machine's runs, oldest first, as a page like the server's `GET /jobs` (the last
    `limit` of them, of one state if `state` is given)."""
    jobs = []
    for folder in RunFolder.all(home):
        status = _live_status(folder)
        if state and not status.state.startswith(state):
            continue
        result = folder.read_result() or {}
        started = datetime.fromtimestamp(folder.spec_file.stat().st_mtime, UTC).isoformat()
        jobs.append({"job_id": folder.job_id, "status": status.state, "workers": status.workers,
                     "submitted_at": started, "metrics": result.get("metrics") or {}})
    return {"jobs": jobs[-limit:], "total": len(jobs), "limit": limit, "offset": max(0, len(jobs) - limit)}


def local_metrics(home: Path, job_id: str) -> dict[str, list[dict]]:
    """A local run's metric series, shaped as the server's `GET /jobs/JOB/metrics`: each
    validation metric per epoch and `train_loss` per step (or block of steps).

    Raises:
        UserError: no such job.
    """
    return RunFolder.find(home, job_id).read_metrics()


def local_log_reader(home: Path, job_id: str) -> tuple[Callable[[int], tuple[str, int]], Callable[[], bool]]:
    """How to read a local run's log from an offset, and whether the run has stopped (ended, or
    its driver is gone), for `client.follow_log`.

    Raises:
        UserError: no such job.
    """
    folder = RunFolder.find(home, job_id)

    def stopped() -> bool:
        return _live_status(folder).state.is_stopped

    return folder.read_log, stopped


def request_scale(home: Path, job_id: str, workers: int) -> int:
    """Ask a running job to run on `workers` workers; returns the count it will aim for.

    Raises:
        UserError: no such job, the job is not running, or `workers` is outside its min..max.
    """
    folder = RunFolder.find(home, job_id)
    spec = folder.read_spec()
    low, high = spec.resources.workers.min, spec.resources.workers.max
    if not low <= workers <= high:
        raise UserError(f"{workers} workers is outside this job's resources.workers range {low}..{high}",
                        where="--workers", fix=f"choose a number from {low} to {high}")
    _ask(folder, "scale", workers)
    return workers


def request_cancel(home: Path, job_id: str) -> None:
    """Ask a running job to stop after its current step and end as cancelled.

    Raises:
        UserError: no such job, or it is not running.
    """
    _ask(RunFolder.find(home, job_id), "cancel")


def _ask(folder: RunFolder, request: str, *args: int) -> None:
    """Pass `request` (scale, cancel) to the job's driver: through Ray to a driver actor, through
    the run folder to a job in a local process.

    Raises:
        UserError: the job is not running.
    """
    status = _live_status(folder)
    if status.state.is_final or status.state is JobState.LOST:
        raise UserError(f"job {folder.job_id} is not running ({status.state})", where=f"elastrain {request}",
                        fix="see `elastrain status JOB_ID`")
    if status.ray_address:
        if _driver(status) is None:   # connects first: nothing may import Ray before (see connect_ray)
            raise UserError(f"job {folder.job_id}'s driver is not on its Ray cluster ({status.ray_address})",
                            where=f"elastrain {request}", fix=f"see `elastrain status {folder.job_id}`")
        from elastrain.elastic.driver import ask

        ask(folder.job_id, request, *args)
    elif request == "scale":
        folder.request_scale(*args)
    else:
        folder.request_cancel()


def print_status(console: Console, snapshot: dict) -> None:
    """The snapshot as a headline, a table of figures and the event list."""
    console.print(f"[bold]{snapshot['job_id']}[/bold] {snapshot['state']}", soft_wrap=True)
    figures = Table(show_header=False)
    figures.add_column(style="bold")
    figures.add_column(justify="right")
    rate = snapshot.get("samples_per_s")
    for name, value in [("workers", snapshot.get("workers")), ("generation", snapshot.get("generation")),
                        ("step", f"{snapshot.get('step')} / {snapshot.get('total_steps')}"),
                        ("epoch", snapshot.get("epoch")), ("samples/s", "-" if rate is None else f"{rate:,.0f}"),
                        ("time left", _time_left(snapshot))]:
        figures.add_row(name, str(value))
    if snapshot.get("read_bytes_per_s") is not None:   # data streamed from storage
        figures.add_row("read", f"{snapshot['read_bytes_per_s'] / 1e6:,.1f} MB/s")
        figures.add_row("waiting on data", f"{100 * snapshot['data_wait_share']:.1f} %")
    console.print(figures)
    print_events(console, snapshot["events"])


def _time_left(snapshot: dict) -> str:
    """The steps left at the current throughput, as h:mm:ss; "-" when unknown or ended."""
    rate, batch = snapshot.get("samples_per_s"), snapshot.get("batch_size")
    if snapshot.get("state") in ENDED or not rate or not batch:
        return "-"
    seconds = int(max(0, snapshot.get("total_steps", 0) - snapshot.get("step", 0)) * batch / rate)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_events(console: Console, events: list[dict]) -> None:
    """The worker count over time, then every event with its duration."""
    if not events:
        return
    # One clock with the job's wall time: the final event's duration counts from when the run was
    # asked for (before Ray and the workers started).
    final = next((e for e in reversed(events) if e["kind"] in ENDED and e.get("duration_s")), None)
    began = min(events[0]["t"], final["t"] - final["duration_s"]) if final else events[0]["t"]
    timeline, last = [], None
    for event in events:
        if event["workers"] != last and event["kind"] not in ("kill", "scale_request", "waiting"):
            timeline.append(f"{event['workers']} @ {event['t'] - began:.1f} s (step {event['step']})")
            last = event["workers"]
    console.print("workers over time: " + " -> ".join(timeline), soft_wrap=True)
    table = Table("time", "event", "step", "workers", "took", "detail", title="events", title_justify="left")
    for event in events:
        if event["kind"] == "checkpoint":   # summed up in the caption
            continue
        took = "" if event.get("duration_s") is None else f"{event['duration_s']:.3f} s"
        # Wall-clock instants (`*_at`, epoch seconds) are for tools, the time column places the event;
        # what a duration measures (`from`) is in docs/failure-handling.md.
        detail = ", ".join(f"{k}={v}" for k, v in event.get("detail", {}).items()
                           if not k.endswith("_at") and k != "from")
        table.add_row(f"{event['t'] - began:7.2f} s", event["kind"], str(event["step"]), str(event["workers"]), took,
                      detail)
    checkpoints = [e for e in events if e["kind"] == "checkpoint"]
    if checkpoints:
        mean = sum(e["duration_s"] or 0 for e in checkpoints) / len(checkpoints)
        table.caption = f"{len(checkpoints)} checkpoints, {mean * 1000:.0f} ms each on average (in the background)"
    console.print(table)
    _print_resizes(console, [e for e in events if e["kind"] == "resized"])


def _print_resizes(console: Console, resized: list[dict]) -> None:
    """Each resize: what was asked when, how long it took to the resized group's first step, and
    how long the running workers paused."""
    if not resized:
        return
    table = Table("asked at step", "workers", "first step", "waited", "paused", title="resizes", title_justify="left",
                  caption="waited: from the request to the first step of the resized group; paused: the running "
                          "workers' stop, within it")
    for event in resized:
        detail = event["detail"]
        table.add_row(str(detail.get("asked_step", "")), f"{detail.get('from_workers', '?')} -> {event['workers']}",
                      str(event["step"]), f"{event['duration_s']:.3f} s", f"{detail['pause_s']:.3f} s")
    console.print(table)


def _driver_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
