"""REST API latency over real HTTP, on SQLite and on PostgreSQL.

For each backend, every repetition builds a fresh database (SQLite: a new file in a temporary
directory; PostgreSQL: `CREATE DATABASE elastrain_bench_<hex>` on POSTGRES_URL, dropped at the
end), preloads PRELOAD jobs straight into the store, starts a real uvicorn server on 127.0.0.1
over it and measures, with one httpx client, the latency of REQUESTS calls each of:

- `POST /api/v1/jobs` with a JSON spec (submit),
- `GET /api/v1/jobs?limit=50` (list, first page),
- `GET /api/v1/jobs?limit=50&offset=950` (list, a page deep in the table).

The backends run interleaved (sqlite, postgresql, sqlite, postgresql ...); each figure is the
median over repetitions of that repetition's percentile. PostgreSQL is reported as skipped, with
the reason, when it cannot be reached.

Usage: python -m bench.api [--repetitions 3] [--save]
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bench import common
from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.errors import UserError
from elastrain.spec import validate_spec
from elastrain.store import Store, UserInfo, connect

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PRELOAD = 1_000
REQUESTS = 200
WARMUP = 10
PAGE = 50
DEEP_OFFSET = 950
SPEC = {"name": "bench-api", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
        "train": {"epochs": 2}}
BACKENDS = ("sqlite", "postgresql")


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench.api] {message}", file=sys.stderr, flush=True)


# databases ---------------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    """The URL of a fresh SQLite file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="elastrain-bench-api-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database on POSTGRES_URL's server, dropped afterwards."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"elastrain_bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


DATABASES: dict[str, Callable[[], AbstractContextManager[str]]] = {
    "sqlite": sqlite_database, "postgresql": postgres_database}


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be benchmarked here, or None when it can."""
    try:
        with postgres_database() as url:
            connect(url).dispose()
    except (SQLAlchemyError, UserError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return reason[0] if reason else type(exc).__name__
    return None


# the server ---------------------------------------------------------------------------------------


def preload(store: Store, owner: UserInfo, count: int) -> None:
    """`count` queued jobs written straight through the store (no HTTP)."""
    spec = validate_spec(SPEC, "bench").model_dump(mode="json")
    for i in range(count):
        store.submit(owner, f"bench-preload-{i:05d}-{secrets.token_hex(4)}", spec)


# measuring ---------------------------------------------------------------------------------------


def timed(call: Callable[[int], httpx.Response], count: int, expected: int) -> list[float]:
    """Milliseconds each of `count` calls took; every answer must have status `expected`."""
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        answer = call(i)
        latencies.append((time.perf_counter() - start) * 1000)
        if answer.status_code != expected:
            raise RuntimeError(f"{answer.request.method} {answer.request.url} answered {answer.status_code}: "
                               f"{answer.text[:300]}")
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) of latencies in ms."""
    return statistics.median(latencies), statistics.quantiles(latencies, n=100, method="inclusive")[98]


def submit_call(client: httpx.Client, tag: str) -> Callable[[int], httpx.Response]:
    """POST one JSON spec; names differ per request so that server-made job ids cannot collide."""
    return lambda i: client.post("/jobs", json={**SPEC, "name": f"bench-{tag}-{i}"})


def list_call(client: httpx.Client, offset: int) -> Callable[[int], httpx.Response]:
    """GET one page of jobs at `offset`."""
    return lambda _: client.get("/jobs", params={"limit": PAGE, "offset": offset})


def measure(base_url: str, token: str) -> dict[str, float]:
    """The percentiles of submit, first-page list and deep-page list over one client."""
    figures: dict[str, float] = {}
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        timed(list_call(client, 0), WARMUP, 200)
        calls = {"submit": (submit_call(client, secrets.token_hex(3)), 201),
                 "list": (list_call(client, 0), 200),
                 f"list_offset{DEEP_OFFSET}": (list_call(client, DEEP_OFFSET), 200)}
        for name, (call, expected) in calls.items():
            p50, p99 = percentiles(timed(call, REQUESTS, expected))
            figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"] = p50, p99
    return figures


def one_run(backend: str) -> dict[str, float]:
    """Fresh database, preload, serve, measure; the figures and the job count at the end."""
    with DATABASES[backend]() as url:
        engine = connect(url)
        try:
            store = Store(engine)
            user, token = store.create_user("bench")
            started = time.perf_counter()
            preload(store, user, PRELOAD)
            progress(f"{backend}: preloaded {PRELOAD} jobs in {time.perf_counter() - started:.1f} s")
            with serving_in_thread(create_app(store)) as url:
                base_url = f"{url}/api/v1"
                figures = measure(base_url, token)
            figures["jobs_in_db"] = store.count_jobs()
        finally:
            engine.dispose()
    return figures


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median over repetitions of each figure (the job count: the last run's)."""
    summary = {key: common.median([run[key] for run in runs]) for key in runs[0] if key != "jobs_in_db"}
    summary["jobs_in_db"] = int(runs[-1]["jobs_in_db"])
    return summary


def ratios(sqlite: dict[str, float], postgresql: dict[str, float]) -> dict[str, float]:
    """PostgreSQL's p50 over SQLite's, per operation."""
    return {key.replace("_p50_ms", ""): round(postgresql[key] / sqlite[key], 3)
            for key in sqlite if key.endswith("_p50_ms")}


def main() -> None:
    args = common.arguments(__doc__, steps=0)
    skipped = {"postgresql": postgres_unavailable()}
    if skipped["postgresql"]:
        progress(f"postgresql skipped: {skipped['postgresql']}")
    backends = [b for b in BACKENDS if not skipped.get(b)]
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
    for repetition in range(1, args.repetitions + 1):
        for backend in backends:
            started = time.perf_counter()
            runs[backend].append(one_run(backend))
            figures = runs[backend][-1]
            progress(f"repetition {repetition}/{args.repetitions} {backend}: submit p50 "
                     f"{figures['submit_p50_ms']:.2f} ms, list p50 {figures['list_p50_ms']:.2f} ms, "
                     f"offset {DEEP_OFFSET} p50 {figures[f'list_offset{DEEP_OFFSET}_p50_ms']:.2f} ms "
                     f"({time.perf_counter() - started:.1f} s)")
    results: dict[str, dict] = {b: summarize(runs[b]) for b in backends}
    results.update({b: {"skipped": reason} for b, reason in skipped.items() if reason})
    if "skipped" not in results["postgresql"]:
        results["postgresql_over_sqlite_p50"] = ratios(results["sqlite"], results["postgresql"])
    common.report("api", {**results, "repetitions": args.repetitions, "requests_per_figure": REQUESTS,
                          "preloaded_jobs": PRELOAD, "page": PAGE}, args.save)


if __name__ == "__main__":
    main()
