"""Restart safety: each server job runs under a detached driver actor, so SIGKILL of
`elastrain server` costs its running jobs nothing (the next server re-attaches to them), and
SIGKILL of one job's driver costs that job only the steps since its last durable checkpoint."""

import os
import signal
import threading
import time

import httpx
import pytest

from elastrain.elastic import run_job
from elastrain.elastic.collective import free_port
from elastrain.runs import RunFolder
from elastrain.spec import validate_spec
from elastrain.store import Store, connect
from tests.conftest import start_server, wait_until

pytestmark = pytest.mark.slow

# Each job's one worker trains in its driver, which holds 1 of the test Ray's 6 CPUs: all three
# run at once, one torch thread each on this 2-core machine. Wide layers and many epochs keep them
# running through two kills and a restart. The three are the same job under three names, so that
# one undisturbed run is the reference of all three.
SPEC = {"data": {"source": "builtin:digits"}, "model": {"kind": "mlp", "hidden": [1024, 1024]},
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 40},
        "resources": {"workers": {"min": 1, "max": 1}, "cpus_per_worker": 1},
        "checkpoint": {"every_steps": 20}}


class StepWatch:
    """Records every step each job's status shows, until stopped."""

    def __init__(self, home, ids):
        self.folders = {job_id: RunFolder.of(home, job_id) for job_id in ids}
        self.seen = {job_id: [] for job_id in ids}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stopping.wait(0.05):
            for job_id, folder in self.folders.items():
                status = folder.read_status()
                if status is not None and (not self.seen[job_id] or self.seen[job_id][-1] != status.step):
                    self.seen[job_id].append(status.step)

    def stop(self):
        self.stopping.set()
        self.thread.join()


def test_a_killed_server_costs_its_jobs_nothing_and_a_killed_driver_only_its_own_job(tmp_path, ray_address):
    home = tmp_path / "server-home"
    home.mkdir()
    store = Store(connect(f"sqlite:///{home / 'elastrain.db'}"))
    _, token = store.create_user("ada")
    port = free_port()
    server = start_server(home, port, ray_address)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {token}"},
                       timeout=30)
    checkpointed = lambda job_id: list((home / "runs" / job_id / "checkpoints").glob("ckpt-*.json"))  # noqa: E731
    try:
        ids = [api.post("/jobs", json={**SPEC, "name": f"job{i}"}).json()["job_id"] for i in range(3)]
        watch = StepWatch(home, ids)
        wait_until(lambda: store.count_jobs(status="running") == 3 and all(checkpointed(i) for i in ids))
        # One job's driver dies: that job alone resumes, from its last checkpoint.
        os.kill(RunFolder.of(home, ids[0]).read_status().driver_pid, signal.SIGKILL)
        wait_until(lambda: "resume" in [e["kind"] for e in store.events(ids[0])])
        # The server dies: every job still training goes on meanwhile (one that reached its last
        # step just before shows as ended: whether any did depends on this machine's speed).
        at_kill = {job_id: RunFolder.of(home, job_id).read_status() for job_id in ids}
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        training = [i for i, status in at_kill.items() if status.step < status.total_steps]
        assert training   # the jobs are long enough for the kill to land while they train

        def went_on(job_id):
            now = RunFolder.of(home, job_id).read_status()
            return now.step > at_kill[job_id].step or now.state == "succeeded"

        wait_until(lambda: all(went_on(i) for i in training))
        restarted = time.monotonic()
        server = start_server(home, port, ray_address)   # it serves once it has re-attached to its jobs
        print(f"the restarted server answered (re-attached) {time.monotonic() - restarted:.1f} s after its start")
        wait_until(lambda: store.count_jobs(status="succeeded") + store.count_jobs(status="failed") == 3, 600)
        watch.stop()
    finally:
        server.kill()
        server.wait()
        api.close()
    jobs = store.jobs()
    assert [j.job_id for j in jobs] == ids and {j.status for j in jobs} == {"succeeded"}
    undisturbed = run_job(validate_spec(jobs[0].spec), tmp_path / "undisturbed")
    for job in jobs:
        kinds = [e["kind"] for e in store.events(job.job_id)]
        # Started once, plus once more where its driver was killed and it resumed; succeeded once.
        assert kinds.count("succeeded") == 1 and kinds.count("start") == 1 + kinds.count("resume"), kinds
        assert kinds.count("resume") == (1 if job.job_id == ids[0] else 0), kinds
        assert validate_spec({**job.spec, "name": "job0"}) == validate_spec(jobs[0].spec)
        assert job.result["steps"] == undisturbed.steps
        assert job.result["metrics"] == undisturbed.metrics, job.job_id
    for job_id in ids[1:]:   # the server's death never set a step counter back
        assert watch.seen[job_id] == sorted(watch.seen[job_id]), watch.seen[job_id]
