"""Shared fixtures: an isolated ELASTRAIN_HOME, the shared reference data, the CLI."""

import os
import time
from pathlib import Path

import pytest

from elastrain.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ELASTRAIN_SHARED", REPO.parent / "shared"))
MNIST = SHARED / "datasets" / "mnist-t10k"


def wait_until(predicate, timeout: float = 120.0, poll: float = 0.05) -> None:
    """Return once `predicate()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture(autouse=True)
def elastrain_home(tmp_path, monkeypatch):
    """Every test writes its runs under its own temporary ELASTRAIN_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("ELASTRAIN_HOME", str(home))
    return home


@pytest.fixture
def mnist_dir():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST test set is not at {MNIST} (set ELASTRAIN_SHARED to the shared/ folder)")
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
