"""A Ray cluster of several hosts (network namespaces on this machine, `tests/netns_cluster.py`):
an elastic job with workers on two hosts survives losing a whole host, in place, and grows back
when the host's Ray node rejoins."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from elastrain.runs import RunFolder
from elastrain.security.certs import issue_cert
from tests import netns_cluster
from tests.conftest import REPO, wait_until
from tests.test_elastic import JOB, assert_exactly_once

WHY_NOT = netns_cluster.available()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("multi_node_cluster_alone"),
              pytest.mark.skipif(WHY_NOT is not None, reason=f"no namespace cluster: {WHY_NOT}")]
STEPS_PER_EPOCH = 24   # 1437 training samples of digits in global batches of 60


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs (it runs the job's driver) and two worker hosts of one CPU each."""
    built = netns_cluster.build([0, 1, 1])
    yield built
    built.teardown()


def start_job(cluster: netns_cluster.Cluster, spec_file: Path, home: Path, trace: Path):
    """Run the job of `spec_file` from the cluster's head; return its driver process and run
    folder once it trains on 2 workers and has taken 100 steps."""
    driver = cluster.head.popen([sys.executable, "-m", "tests.netns_job", str(spec_file), str(home), str(trace)],
                                env={"RAY_ADDRESS": cluster.ray_address}, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: list(home.glob("runs/*/status.json")), timeout=120)
        folder = RunFolder(next(home.glob("runs/*")))
        wait_until(lambda: (status := folder.read_status()) is not None and status.workers == 2 and status.step >= 100,
                   timeout=120)
    except BaseException:
        driver.kill()
        raise
    return driver, folder


def job_result(stdout: str) -> dict:
    """The result `tests/netns_job.py` printed."""
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT "))


def events_of(folder: RunFolder) -> list[dict]:
    return folder.read_events() if folder.events_file.exists() else []


def metadata_endpoint(host: netns_cluster.Host, notice: Path) -> subprocess.Popen:
    """A fake AWS metadata endpoint in `host`'s namespace, serving `notice` once it is written."""
    metadata = host.popen([sys.executable, "-m", "tests.fake_metadata", "8099", str(notice)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
    assert metadata.stdout.readline().strip() == "ready"
    return metadata


def preempt(cluster: netns_cluster.Cluster, folder: RunFolder, doomed: netns_cluster.Host, notice: Path) -> None:
    """AWS's two-minute notice for `doomed`; once the job reports it preempted, the cloud takes the
    host (sooner than it said) and its Ray node is gone."""
    goes_at = datetime.now(UTC) + timedelta(seconds=120)
    notice.write_text(json.dumps({"action": "terminate", "time": goes_at.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    wait_until(lambda: "preempted" in [e["kind"] for e in events_of(folder)], timeout=60)
    doomed.kill()
    cluster.wait_nodes({h.address for h in cluster.hosts if h is not doomed})


def test_a_host_lost_for_good_costs_the_step_in_flight_and_the_job_completes_on_the_survivors(cluster, tmp_path):
    home, trace = tmp_path / "home", tmp_path / "trace"
    trace.mkdir()
    spec_file = tmp_path / "job.yaml"
    # The kill comes at step 100, 1,100 steps before the end; no step completes between the kill
    # and the re-formation (each step is collective), so the job cannot end before it is lost.
    epochs = 50
    spec_file.write_text(JOB.format(epochs=epochs, max_workers=2, every=100_000, hidden=[256, 256], dropout=0.0))
    driver, folder = start_job(cluster, spec_file, home, trace)
    lost_host = cluster.hosts[2]
    try:
        assert lost_host.kill() > 0
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
        cluster.start_node(lost_host)   # back for the next test
    assert driver.returncode == 0, err[-3000:]
    result = job_result(out)
    assert result["status"] == "succeeded" and result["steps"] == epochs * STEPS_PER_EPOCH
    kinds = [e["kind"] for e in folder.read_events()]
    assert kinds.index("worker_lost") < kinds.index("recovered") and "resume" not in kinds
    recovered = next(e for e in folder.read_events() if e["kind"] == "recovered")
    assert recovered["workers"] == 1 and recovered["duration_s"] > 0
    assert_exactly_once(trace, steps=epochs * STEPS_PER_EPOCH, epochs=epochs)


def test_a_lost_host_costs_the_step_in_flight_and_the_job_grows_back_when_it_returns(cluster, tmp_path):
    home, trace = tmp_path / "home", tmp_path / "trace"
    trace.mkdir()
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=5000, max_workers=2, every=100_000, hidden=[256, 256], dropout=0.0))
    driver, folder = start_job(cluster, spec_file, home, trace)
    try:
        lost_host = cluster.hosts[2]
        assert lost_host.kill() > 0
        wait_until(lambda: "recovered" in [e["kind"] for e in events_of(folder)], timeout=120)
        cluster.start_node(lost_host)   # the host is back: its Ray node rejoins the cluster
        wait_until(lambda: [e for e in events_of(folder) if e["kind"] == "scale_out" and e["workers"] == 2],
                   timeout=120)
        folder.request_cancel()
        out, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 0, err[-3000:]
    result = job_result(out)
    assert result["status"] == "cancelled"
    events = folder.read_events()
    kinds = [e["kind"] for e in events]
    assert kinds.index("worker_lost") < kinds.index("recovered") < kinds.index("scale_out")
    assert kinds.count("cancelled") == 1 and kinds[-1] == "cancelled"
    lost = next(e for e in events if e["kind"] == "worker_lost")
    recovered = next(e for e in events if e["kind"] == "recovered")
    # In place: the survivor went on from its own step (no checkpoint was read), on one worker.
    assert lost["workers"] == 1 and "resume" not in kinds and not list(folder.checkpoints.glob("*.pt"))
    assert recovered["duration_s"] is not None and recovered["duration_s"] > 0
    steps = result["steps"]
    assert_exactly_once(trace, steps=steps, epochs=-(-steps // STEPS_PER_EPOCH), partial_last=True)


@pytest.fixture(scope="module")
def tls_cluster():
    """The same hosts with Ray's mutual TLS between them, a certificate per host from one CA."""
    built = netns_cluster.build([0, 1, 1], tls=True)
    yield built
    built.teardown()


def test_with_tls_a_job_runs_and_a_node_without_the_clusters_certificate_cannot_join(tls_cluster, tmp_path):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=3, max_workers=2, every=100_000, hidden=[32], dropout=0.0))
    (tmp_path / "trace").mkdir()
    done = tls_cluster.head.run([sys.executable, "-m", "tests.netns_job", str(spec_file), str(tmp_path / "home"),
                                 str(tmp_path / "trace")], env={"RAY_ADDRESS": tls_cluster.ray_address}, cwd=REPO,
                                timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = job_result(done.stdout)
    assert result["status"] == "succeeded" and result["steps"] == 3 * STEPS_PER_EPOCH
    assert {json.loads(line)["world_size"] for f in (tmp_path / "trace").glob("*.jsonl")
            for line in f.read_text().splitlines()} >= {2}   # both worker hosts trained, over TLS
    head, lacking, foreign = tls_cluster.hosts
    for host in (lacking, foreign):
        host.kill()
    tls_cluster.wait_nodes({head.address})
    rogue = issue_cert(tmp_path / "rogue", [foreign.address, "127.0.0.1"], name="rogue")   # another CA's
    attempts = [(lacking, {"RAY_USE_TLS": "0"}), (foreign, netns_cluster.tls_env(rogue))]

    def refused(attempt: tuple[netns_cluster.Host, dict]) -> bool:
        # `ray start` retries a head that refuses it until it gives up; 20 s bound the wait here.
        try:
            tls_cluster.start_node(attempt[0], timeout_s=20, env=attempt[1])
        except (RuntimeError, subprocess.TimeoutExpired):
            return True
        return False

    with ThreadPoolExecutor(len(attempts)) as pool:   # both wait out their 20 s at once
        assert list(pool.map(refused, attempts)) == [True, True]
    assert tls_cluster.alive_nodes() == {head.address}
    for host in (lacking, foreign):
        host.kill()
        tls_cluster.start_node(host)   # its own certificate: it joins
    tls_cluster.wait_nodes({h.address for h in tls_cluster.hosts})


def test_a_preemption_notice_lets_the_hosts_worker_leave_at_a_step_boundary_losing_nothing(cluster, tmp_path):
    """AWS's two-minute notice, from a fake metadata endpoint in the host's own namespace: the
    group stops after the same step, the host's worker leaves, the others go on; when the host is
    then taken, nothing breaks (no worker_lost, no recovery), and every sample is trained once."""
    home, trace, notice = tmp_path / "home", tmp_path / "trace", tmp_path / "notice.json"
    trace.mkdir()
    cluster.wait_nodes({h.address for h in cluster.hosts})   # the host lost in the test before is back
    doomed = cluster.hosts[2]
    metadata = metadata_endpoint(doomed, notice)
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=5000, max_workers=2, every=100_000, hidden=[256, 256], dropout=0.0).replace(
        "wait_timeout_s: 60", "wait_timeout_s: 60, preemption_notices: {source: aws, poll_s: 0.2, "
        "url: 'http://127.0.0.1:8099/latest/meta-data/spot/instance-action'}"))
    driver, folder = start_job(cluster, spec_file, home, trace)
    try:
        preempt(cluster, folder, doomed, notice)
        step = folder.read_status().step
        wait_until(lambda: folder.read_status().step > step + 50, timeout=60)   # the job went on past it
        folder.request_cancel()
        out, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
        metadata.kill()
        cluster.start_node(doomed)
    assert driver.returncode == 0, err[-3000:]
    result = job_result(out)
    events = folder.read_events()
    kinds = [e["kind"] for e in events]
    assert "worker_lost" not in kinds and "recovered" not in kinds, kinds
    preempted = next(e for e in events if e["kind"] == "preempted")
    assert preempted["workers"] == 1 and preempted["detail"]["source"] == "aws"
    assert preempted["detail"]["host"] == doomed.address and 100 < preempted["detail"]["lead_s"] <= 120
    regrouped = next(e for e in events if e["kind"] == "scale_in")
    assert regrouped["workers"] == 1 and regrouped["detail"] == {"preempted": 1}
    steps = result["steps"]
    assert_exactly_once(trace, steps=steps, epochs=-(-steps // STEPS_PER_EPOCH), partial_last=True)


# Rounds of a few milliseconds: the notice lands some tens of rounds after it is written. The 2
# workers' histogram sums differ from one worker's in their last bits; over many more rounds a
# near-tie between two splits may fall the other way (seen after 300-1500 rounds of this job).
ROUNDS = 400
TREES = """
name: trees-preempted
data: {source: 'synthetic:classification', synthetic: {n_samples: 20000, n_features: 20}, scaling: none,
       split_seed: 0}
model: {kind: gbdt, rounds: 400, max_depth: 4, learning_rate: 0.02}
train: {seed: 3}
resources: {workers: {min: 1, max: 2}, cpus_per_worker: 1, wait_timeout_s: 60, preemption_notices: {source: aws,
            poll_s: 0.2, url: 'http://127.0.0.1:8099/latest/meta-data/spot/instance-action'}}
"""


def test_a_preemption_notice_costs_a_tree_job_no_round(cluster, tmp_path):
    """A tree job (XGBoost's ring across two hosts) and AWS's notice on one host: the group stops
    after the same round, the host's worker leaves, the survivor goes on from the booster both
    held; when the host is taken nothing breaks (no worker_lost, no recovery), and the saved trees
    are those of the same job on one worker in this process: no round lost or repeated."""
    import numpy as np
    import xgboost

    from elastrain.spec import parse_spec
    from elastrain.train.learner import build_learner
    from elastrain.train.loop import fit

    home, notice = tmp_path / "home", tmp_path / "notice.json"
    cluster.wait_nodes({h.address for h in cluster.hosts})
    doomed = cluster.hosts[2]
    metadata = metadata_endpoint(doomed, notice)
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(TREES)
    driver, folder = start_job(cluster, spec_file, home, Path("-"))
    try:
        preempt(cluster, folder, doomed, notice)
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
        metadata.kill()
        cluster.start_node(doomed)
    assert driver.returncode == 0, err[-3000:]
    result = job_result(out)
    assert result["status"] == "succeeded" and result["steps"] == ROUNDS
    events = folder.read_events()
    kinds = [e["kind"] for e in events]
    assert "worker_lost" not in kinds and "recovered" not in kinds, kinds
    preempted = next(e for e in events if e["kind"] == "preempted")
    regrouped = next(e for e in events if e["kind"] == "scale_in")
    assert preempted["workers"] == 1 and regrouped["step"] == preempted["step"] < ROUNDS   # on from the same round
    alone = build_learner(parse_spec(TREES))
    fit(alone)
    x = np.random.default_rng(0).normal(size=(2000, 20)).astype(np.float32)
    ours = xgboost.Booster(model_file=str(Path(result["model_path"]) / "model.ubj"))
    assert ours.num_boosted_rounds() == ROUNDS
    assert np.abs(ours.predict(xgboost.DMatrix(x)) - xgboost.Booster(model_file=bytearray(alone._raw())).predict(
        xgboost.DMatrix(x))).max() <= 1e-5


def test_elastrain_run_keeps_its_driver_on_the_node_it_was_started_on(cluster, tmp_path):
    """The driver writes the run folder in ELASTRAIN_HOME of the node `elastrain run` runs on; a
    driver holding no CPUs must not be placed on another node (here, the head has none, and the
    worker hosts have room)."""
    cluster.wait_nodes({h.address for h in cluster.hosts})
    home, spec_file = tmp_path / "home", tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=5000, max_workers=2, every=100_000, hidden=[32], dropout=0.0))
    env = {"RAY_ADDRESS": cluster.ray_address, "ELASTRAIN_HOME": str(home)}
    run = cluster.head.popen([sys.executable, "-m", "elastrain", "run", str(spec_file), "--json"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: list(home.glob("runs/*/status.json")), timeout=120)
        folder = RunFolder(next(home.glob("runs/*")))
        wait_until(lambda: (status := folder.read_status()) is not None and status.step > 0, timeout=120)
        where = ("import ray; from ray._private import state; from elastrain.elastic.driver import find_driver; "
                 "ray.init(logging_level='ERROR', log_to_driver=False); print('NODE', "
                 f"state.actors(actor_id=find_driver('{folder.job_id}')._actor_id.hex())['Address']['IPAddress'])")
        found = cluster.head.run([sys.executable, "-c", where], env=env, cwd=REPO, timeout=120)
        assert found.returncode == 0, found.stderr[-2000:]
        cancel = cluster.head.run([sys.executable, "-m", "elastrain", "cancel", folder.job_id], env=env, cwd=REPO,
                                  timeout=120)
        assert cancel.returncode == 0, cancel.stderr[-2000:]
        run.communicate(timeout=120)
    finally:
        run.kill()
    assert f"NODE {cluster.head.address}" in found.stdout.splitlines()
