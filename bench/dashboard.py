"""The dashboard, measured in the browser its tests use (Debian's chromium, driven by Playwright),
against a real server on 127.0.0.1 over a real SQLite store (no job loop: what is measured is the
dashboard, not training).

1. Jobs page: the store holds JOBS jobs (a mix of states; the running ones with events). A logged-in
   page is loaded REPEAT times; each time the page itself records `performance.now()` (milliseconds
   since the navigation started) when the jobs table's rows are in the DOM (`data-ready-ms`).
   Target: under 500 ms.
2. Event latency: a job marked running has its page open; EVENTS events are appended to the store one
   at a time (as a job's driver does through its sink), each stamped with the wall clock; the page
   records, for each new event it shows, the wall clock then minus the event's stamp
   (`data-event-lag-ms`; one machine, one clock). Target: under 1,000 ms.

Usage: python -m bench.dashboard [--repetitions 10] [--save]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from bench.api import preload
from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.store import Store, UserInfo, connect

JOBS = 1_000
EVENTS = 30
TARGET_RENDER_MS, TARGET_EVENT_MS = 500.0, 1_000.0


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench.dashboard] {message}", file=sys.stderr, flush=True)


def browser_page(playwright, url: str, token: str):
    """A chromium page logged in to the dashboard at `url` with `token`."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("bench.dashboard needs chromium: apt-get install chromium")
    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/login")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{url}/")
    return page


def wait_for_body_data(page, name: str, predicate, timeout_s: float = 30.0) -> str:
    """The page's `document.body.dataset[name]` (`name` as in HTML: data-NAME) once `predicate`
    holds for it (it is None while unset). Read attribute by attribute: Playwright's
    wait_for_function evaluates a string, which the dashboard's CSP forbids."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.get_attribute("body", f"data-{name}")
        if value is not None and predicate(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"data-{name} is still {value!r} after {timeout_s} s")
        page.wait_for_timeout(20)


def fill(store: Store, owner: UserInfo, count: int) -> str:
    """`count` jobs in the store, a tenth of them running with a few resize events, a tenth
    succeeded; the id of one running job."""
    preload(store, owner, count)
    jobs = store.jobs(owner, limit=count)
    now = time.time()
    for i, job in enumerate(jobs):
        if i % 10 == 0:
            store.update_job(job.job_id, status="running", workers=2)
            store.add_events(job.job_id, [
                {"t": now - 600, "kind": "start", "step": 0, "workers": 1, "generation": 1},
                {"t": now - 300, "kind": "scale_out", "step": 500, "workers": 2, "generation": 2}])
        elif i % 10 == 1:
            store.update_job(job.job_id, status="succeeded")
    return jobs[0].job_id


def render_times(page, url: str, repetitions: int) -> list[float]:
    """Milliseconds from navigation start to the jobs table's rows, per load of the jobs page."""
    times = []
    for _ in range(repetitions):
        page.goto(f"{url}/")
        page.wait_for_selector("body[data-ready='jobs']")
        assert len(page.query_selector_all("#jobs tr[data-job-id]")) == 50
        times.append(float(page.get_attribute("body", "data-ready-ms")))
    return times


def event_lags(page, url: str, store: Store, job_id: str, count: int) -> list[float]:
    """Milliseconds from each of `count` events' stamp to its showing on the open job page."""
    page.goto(f"{url}/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='job']")
    shown = int(page.get_attribute("body", "data-events"))
    lags, rng = [], random.Random(0)
    for i in range(count):
        time.sleep(rng.uniform(0.1, 0.9))   # not in step with the page's polling
        store.add_events(job_id, [{"t": time.time(), "kind": "checkpoint", "step": 1000 + i, "workers": 2,
                                   "generation": 2, "duration_s": 0.01}])
        shown += 1
        wait_for_body_data(page, "events", lambda value, shown=shown: int(value) >= shown)
        lags.append(float(page.get_attribute("body", "data-event-lag-ms")))
    return lags


def summary(values: list[float]) -> dict[str, float]:
    """Median, 95th percentile and maximum, rounded."""
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(ordered[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=10, help="loads of the jobs page")
    parser.add_argument("--events", type=int, default=EVENTS, help="events sent to the open job page")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="elastrain-bench-dashboard-") as folder:
        store = Store(connect(f"sqlite:///{Path(folder) / 'bench.db'}"))
        owner, token = store.create_user("bench", admin=True)
        progress(f"writing {JOBS} jobs into the store")
        job_id = fill(store, owner, JOBS)
        with serving_in_thread(create_app(store, home=Path(folder))) as url, sync_playwright() as playwright:
            page = browser_page(playwright, url, token)
            progress(f"loading the jobs page {args.repetitions} times")
            render_times(page, url, 2)   # warm: the browser's cache of the assets, the server's imports
            render = render_times(page, url, args.repetitions)
            progress(f"sending {args.events} events to an open job page")
            lags = event_lags(page, url, store, job_id, args.events)
    render_ms, lag_ms = summary(render), summary(lags)
    progress(f"jobs page ({JOBS} jobs): {render_ms} ms; event to page: {lag_ms} ms")
    common.report("dashboard", {
        "jobs_in_store": JOBS, "jobs_page_render_ms": render_ms, "event_to_page_ms": lag_ms,
        "targets_ms": {"jobs_page_render": TARGET_RENDER_MS, "event_to_page": TARGET_EVENT_MS},
        "met": render_ms["max"] < TARGET_RENDER_MS and lag_ms["max"] < TARGET_EVENT_MS,
        "repetitions": args.repetitions, "events": args.events, "browser": "chromium (Debian), headless"},
        args.save)


if __name__ == "__main__":
    main()
