"""Restart safety: SIGKILL `elastrain server` with 2 jobs running and 3 queued, start it again:
all 5 finish exactly once, with the results of undisturbed runs."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from elastrain.elastic import run_job
from elastrain.elastic.collective import free_port
from elastrain.spec import validate_spec
from elastrain.store import Store, connect
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.slow

# Each job asks for 3 of the test Ray's 6 CPUs, so two run at a time.
SPEC = {"data": {"source": "builtin:digits"}, "model": {"kind": "mlp", "hidden": [512, 512]},
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 8},
        "resources": {"workers": {"min": 1, "max": 1}, "cpus_per_worker": 3},
        "checkpoint": {"every_steps": 20}}


def start_server(home, port, ray_address):
    env = {**os.environ, "ELASTRAIN_HOME": str(home), "RAY_ADDRESS": ray_address}
    env.pop("ELASTRAIN_DB_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "elastrain", "server", "--port", str(port)], cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not start")


def test_a_killed_server_resumes_its_jobs_and_runs_none_twice(tmp_path, ray_address):
    home = tmp_path / "server-home"
    home.mkdir()
    store = Store(connect(f"sqlite:///{home / 'elastrain.db'}"))
    _, token = store.create_user("ada")
    port = free_port()
    server = start_server(home, port, ray_address)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {token}"},
                       timeout=30)
    try:
        ids = [api.post("/jobs", json={**SPEC, "name": f"job{i}", "train": {**SPEC["train"], "seed": i}}
                        ).json()["job_id"] for i in range(5)]
        # Kill once two jobs run and both have written a checkpoint, while three wait.
        wait_until(lambda: len(list(home.glob("runs/*/checkpoints/ckpt-*.json"))) >= 2
                   and store.count_jobs(status="running") == 2)
        assert store.count_jobs(status="queued") == 3
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        server = start_server(home, port, ray_address)
        wait_until(lambda: store.count_jobs(status="succeeded") + store.count_jobs(status="failed") == 5, 300)
    finally:
        server.kill()
        server.wait()
        api.close()
    jobs = store.jobs()
    assert [j.job_id for j in jobs] == ids and {j.status for j in jobs} == {"succeeded"}
    resumed = 0
    for job in jobs:
        kinds = [e["kind"] for e in store.events(job.job_id)]
        # Ran once: started once, plus once per resume from a checkpoint; succeeded once.
        assert kinds.count("succeeded") == 1 and kinds.count("start") == 1 + kinds.count("resume"), kinds
        resumed += kinds.count("resume")
        undisturbed = run_job(validate_spec(job.spec), tmp_path / "undisturbed")
        assert job.result["steps"] == undisturbed.steps
        assert job.result["metrics"] == undisturbed.metrics, job.job_id
    assert resumed == 2
