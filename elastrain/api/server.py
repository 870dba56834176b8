"""`elastrain server`: the REST API and the job loop, over the store under ELASTRAIN_HOME."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from elastrain import paths
from elastrain.api.app import create_app
from elastrain.api.service import JobService
from elastrain.elastic import connect_ray
from elastrain.errors import UserError
from elastrain.scheduler import FifoPacking, GoodputPolicy, Policy
from elastrain.store import Store, connect

# The scheduling policies `elastrain server --policy` offers (its --help says what each does).
POLICIES = ("fifo", "goodput")


def make_policy(name: str) -> Policy:
    """The policy `name` (one of `POLICIES`) for a server with a fixed set of CPUs.

    Raises:
        UserError: there is no such policy.
    """
    if name == "fifo":
        return FifoPacking()
    if name == "goodput":
        return GoodputPolicy(autoscale=False)   # the server's capacity is the Ray cluster it joined
    raise UserError(f"unknown scheduling policy '{name}'", where="--policy", fix=f"use one of: {', '.join(POLICIES)}")


def serve(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None, policy: Policy | None = None,
          tls_cert: Path | None = None, tls_key: Path | None = None, cpu_hour_price: float = 0.0) -> None:
    """Run the API and the jobs until interrupted (127.0.0.1 by default: nothing outside this
    machine reaches it), the jobs scheduled by `policy` (default: first come, first served); over
    HTTPS with the PEM certificate `tls_cert` and its key `tls_key` (checked beforehand by
    `elastrain.security.transport.check_server_tls`, as is the host by `check_listen`).

    Each job runs under a detached driver actor. On the Ray cluster at RAY_ADDRESS the jobs go on
    when this server stops or dies, and the next server re-attaches to them; on an embedded Ray
    they stop with it and the next server resumes them from their checkpoints. On an embedded Ray
    the machine's CPUs cost `cpu_hour_price` USD each per hour (what the dashboard's costs use)."""
    import ray

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("elastrain").addHandler(handler)   # jobs starting, resizing, ending
    logging.getLogger("elastrain").setLevel(logging.INFO)
    store = Store(connect(db_url))
    address = os.environ.get("RAY_ADDRESS")
    connect_ray(address)   # here, in the main thread, not in a job's thread
    # On a Ray cluster of its own (RAY_ADDRESS) the jobs outlive this server; an embedded Ray ends
    # with it, so its jobs stop at a step boundary first.
    service = JobService(store, paths.home(), policy or FifoPacking(), cpus=ray.cluster_resources().get("CPU", 1.0),
                         artifacts=os.environ.get("ELASTRAIN_ARTIFACTS"), keep_jobs_running=bool(address),
                         cpu_hour_price=cpu_hour_price)
    service.start()
    try:
        uvicorn.run(create_app(store, home=paths.home()), host=host, port=port, log_level="warning",
                    ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    finally:
        service.stop()


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 30.0
                      ) -> Iterator[str]:
    """`app` served by uvicorn in a background thread of this process (for tests, benchmarks and
    notebooks) on `port` (default: one the system picks) until the block ends; yields its base URL.

    Raises:
        RuntimeError: the server did not start within `start_timeout_s`.
    """
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port or 0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError(f"uvicorn did not start on {host}:{port or 'a free port'}")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
