"""Shared fixtures: an isolated ELASTRAIN_HOME, the reference data of datasets/ and traces/, the CLI."""

import contextlib
import fcntl
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.api.service import JobService
from elastrain.cli.main import main
from elastrain.elastic.collective import free_port
from elastrain.scheduler import FifoPacking
from elastrain.serve.app import ServeConfig, create_serve_app
from elastrain.store import Store, connect

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "datasets" / "mnist-t10k"   # copies in the repository, with their provenance (README.md)
TRACES = REPO / "traces"
PG_URL = os.environ.get("ELASTRAIN_TEST_PG_URL")


def wait_until(predicate, timeout: float = 120.0, poll: float = 0.05) -> None:
    """Return once `predicate()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s")


def start_server(home, port, ray_address, *options, verify=True, log=None):
    """A real `elastrain server` process on 127.0.0.1:`port` with `options` (e.g. --tls-cert ...),
    over ELASTRAIN_HOME `home`, its jobs on the Ray at `ray_address`; returned once it answers (over
    HTTPS with --tls-cert, its certificate checked against `verify`). Its output goes to `log`."""
    env = {**os.environ, "ELASTRAIN_HOME": str(home), "RAY_ADDRESS": ray_address}
    env.pop("ELASTRAIN_DB_URL", None)
    with open(log, "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as output:
        process = subprocess.Popen([sys.executable, "-m", "elastrain", "server", "--port", str(port), *options],
                                   cwd=REPO, env=env, stdout=output, stderr=output)
    scheme = "https" if "--tls-cert" in options else "http"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{scheme}://127.0.0.1:{port}/api/v1/openapi.json", timeout=1, verify=verify)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not start (exit code {process.wait()})")


@pytest.fixture(autouse=True)
def elastrain_home(tmp_path, monkeypatch):
    """Every test writes its runs under its own temporary ELASTRAIN_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("ELASTRAIN_HOME", str(home))
    return home


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL server that
    ELASTRAIN_TEST_PG_URL names (`.ci/run` sets it; skipped without it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests skipped: set ELASTRAIN_TEST_PG_URL (e.g. "
                    "postgresql+psycopg://postgres@127.0.0.1:5432/test) to run them")
    name = f"elastrain_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def store(database_url):
    """A `Store` over the fresh database `database_url`."""
    engine = connect(database_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def mnist_dir():
    """The MNIST test set in IDX format."""
    return MNIST


@pytest.fixture
def cli(capsys):
    """Run `elastrain ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exited.value.code or 0, captured.out, captured.err

    return invoke


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray instance for the whole test session (starting Ray takes seconds); its address.
    Always a new one: Ray would otherwise join a cluster started on this machine by `ray start`."""
    import ray

    from elastrain.elastic.connect import EMBEDDED_SYSTEM_CONFIG

    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False, _system_config=EMBEDDED_SYSTEM_CONFIG)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def multi_node_cluster_alone(tmp_path_factory):
    """For a module that starts a Ray cluster of several nodes on this machine and checks what its
    autoscaler or nodes do in time: no other such module runs beside it under pytest-xdist (on 2
    cores, the live scheduler's autoscaler launched a node for demand that the load kept pending
    while the namespace hosts' cluster ran)."""
    # The workers' base folders share this parent; a lock file there is seen by all of them.
    with open(tmp_path_factory.getbasetemp().parent / "multi-node-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def server(tmp_path, elastrain_home, ray_address):
    """A running server's URL and the tokens of ada and bob (its jobs' drivers on the test Ray)."""
    store = Store(connect(f"sqlite:///{tmp_path / 'server.db'}"))
    tokens = {name: store.create_user(name)[1] for name in ("ada", "bob")}
    service = JobService(store, elastrain_home, FifoPacking(), cpus=2, interval_s=0.05)
    service.start()
    with serving_in_thread(create_app(store, home=elastrain_home)) as url:
        yield url, tokens
    service.stop()


@pytest.fixture
def serving():
    """Start `elastrain serve`'s app on 127.0.0.1 for a ServeConfig; its base URL."""
    servers = []

    def start(config: ServeConfig) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_serve_app(config), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started, timeout=60)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A real tmpfs mounted at `path` with mount `options` (e.g. "ro,size=1m") while in the block;
    skips the test where mounting is refused (it needs root; chmod does not stop root, a read-only
    or full mount does)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path} ({done.stderr.strip()}): the test needs root")
    try:
        yield path
    finally:
        # Lazily: a file a failed run left open must not leave the mount behind.
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def train_digits_model(tmp_path_factory, epochs: int) -> Path:
    """The model directory of examples/mlp_digits.yaml trained for `epochs` epochs in a home of its own."""
    from elastrain.sdk import Job

    home = tmp_path_factory.mktemp("home")
    return Job.from_yaml(REPO / "examples" / "mlp_digits.yaml", {"train.epochs": epochs}).run(home=home).model_path



def pytest_collection_modifyitems(items):
    """Tests get ids of their own, and the files expected to take longest run first."""
    name_schemathesis_tests_by_operation(items)
    # pytest-xdist hands out whole files in this order: a long file handed out last would leave
    # the other process idle at the end. A file's expected cost: 30 per slow test (over 30 s), 5
    # per test on Ray (workers start in seconds), little for the rest. A stable sort: each file's
    # tests keep their order.
    cost: dict[Path, float] = {}
    for item in items:
        cost[item.path] = cost.get(item.path, 0.0) + (
            30.0 if item.get_closest_marker("slow") else 5.0 if "ray_address" in item.fixturenames else 0.2)
    items.sort(key=lambda item: -cost[item.path])


def name_schemathesis_tests_by_operation(items) -> None:
    """Each API operation's schemathesis test gets an id of its own: schemathesis 4.32.5 passes the
    function's name as `originalname`, from which pytest 9.2 builds the id, so every operation's
    test had the same one, and pytest-xdist, which tells tests apart by id, ran one of them."""
    for item in items:
        label = getattr(item, "operation_label", None)
        if label and getattr(item, "callspec", None) is None and item.nodeid.endswith(f"::{item.originalname}"):
            item._id = item._id.with_params(label)
