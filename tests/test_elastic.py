"""The elastic engine on a real local Ray instance with real worker processes: resizes,
SIGKILLed workers and drivers, checkpoints, and too few resources."""

import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from elastrain.data import prepare_dataset
from elastrain.data.sampler import epoch_order
from elastrain.elastic import RunOptions, parse_chaos, resume_job, run_job
from elastrain.runs import RunFolder
from elastrain.spec import parse_spec
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.usefixtures("ray_address")

JOB = """
name: elastic-test
data: {{source: 'builtin:digits'}}
model: {{kind: mlp, hidden: {hidden}, dropout: {dropout}}}
train: {{optimizer: momentum, lr: 0.05, batch_size: 60, epochs: {epochs}, seed: 1}}
resources: {{workers: {{min: 1, max: {max_workers}}}, cpus_per_worker: 1, wait_timeout_s: 60}}
checkpoint: {{every_steps: {every}, keep: 3}}
"""


def job(epochs=3, max_workers=3, every=10, hidden=(32,), dropout=0.0):
    return parse_spec(JOB.format(epochs=epochs, max_workers=max_workers, every=every, hidden=list(hidden),
                                 dropout=dropout))


def parameters(result) -> dict:
    return torch.load(Path(result.model_path) / "model.pt", weights_only=True)


def kinds(result) -> list[str]:
    return [e["kind"] for e in RunFolder(Path(result.run_dir)).read_events()]


@pytest.mark.slow
def test_resizes_and_a_killed_worker_change_neither_the_parameters_nor_the_samples(elastrain_home, tmp_path):
    # Each chaos action waits until the previous resize has taken effect. The workers that leave
    # at step 2 wait loaded as warm standbys and rejoin about 13 steps after step 14 with two busy
    # processes beside the job; the last action lands at step 60 of 240.
    wide, epochs = (1024, 1024), 10
    single = run_job(job(epochs=epochs, max_workers=1, hidden=wide), elastrain_home)
    chaos = parse_chaos("scale=1@step=2,scale=3@step=14,kill@step=40,scale=2@step=60")
    elastic = run_job(job(epochs=epochs, hidden=wide), elastrain_home,
                      options=RunOptions(chaos=chaos, trace_dir=str(tmp_path)))
    assert single.status == elastic.status == "succeeded" and single.steps == elastic.steps == 24 * epochs
    # Same update, different order of float32 additions (shares of 20/20/20 or 30/30 samples are
    # summed per worker, then across workers). Rounding differences (float32 epsilon 6e-8) grow
    # over hundreds of momentum steps to about 5e-5 of each tensor's norm (measured; up to ~1e-3 in
    # smaller nets). This bounds the arithmetic; the trace below proves no step was skipped or
    # repeated, which a tolerance on the weights cannot.
    for name, value in parameters(single).items():
        drift = float((parameters(elastic)[name] - value).norm() / value.norm())
        assert drift < 2e-3, (name, drift)
    events = RunFolder(Path(elastic.run_dir)).read_events()
    seen = [e["kind"] for e in events]
    assert {"scale_in", "scale_out", "kill", "worker_lost", "recovered"} <= set(seen)
    # A `waiting` event (workers slow to start on a loaded machine) counts the members before the first formation.
    sizes = [e["workers"] for e in events if e["kind"] != "waiting"]
    assert max(sizes) == 3 and min(sizes) == 1
    recovered = next(e for e in events if e["kind"] == "recovered")
    assert recovered["duration_s"] is not None and recovered["duration_s"] > 0
    # The group pauses after the step an action names; nothing was under way at steps 2 and 14.
    chaos_steps = [e["step"] for e in events if e["detail"].get("source") == "chaos"]
    assert chaos_steps[:2] == [2, 14] and chaos_steps[2] >= 40 and chaos_steps[3] >= 60
    resized = [e for e in events if e["kind"] == "resized"]
    assert [(e["detail"]["from_workers"], e["workers"]) for e in resized][:2] == [(3, 1), (1, 3)]
    assert all(0 < e["detail"]["pause_s"] <= e["duration_s"] for e in resized)

    assert_exactly_once(tmp_path, steps=24 * epochs, epochs=epochs)

def test_a_dropout_model_ends_the_same_on_one_worker_and_on_a_resized_group(elastrain_home):
    """Dropout masks are drawn per sample (models.dropout), not from the process's generator, so
    how the batch is split over workers does not change them."""
    single = run_job(job(epochs=10, max_workers=1, hidden=(512, 512), dropout=0.3), elastrain_home)
    elastic = run_job(job(epochs=10, hidden=(512, 512), dropout=0.3), elastrain_home,
                      options=RunOptions(chaos=parse_chaos("scale=1@step=3,scale=3@step=20,scale=2@step=150")))
    assert single.status == elastic.status == "succeeded" and single.steps == elastic.steps == 240
    # Steps 1-3 ran on 3 workers (shards of 20) for sure; the grow back to 3 usually lands too.
    assert "scale_in" in {e["kind"] for e in RunFolder(Path(elastic.run_dir)).read_events()}
    for name, value in parameters(single).items():
        drift = float((parameters(elastic)[name] - value).norm() / value.norm())
        assert drift < 1e-4, (name, drift)   # float32 reduction order only; other masks: ~1e-1


def assert_exactly_once(trace_dir: Path, steps: int, epochs: int, partial_last: bool = False) -> None:
    """Every step was completed once, and each epoch's samples were trained on exactly once (the
    last epoch's only in part, as far as it went, when `partial_last`: a cancelled job).

    A step counts as done by the last generation that completed it; its workers' shards are
    disjoint parts of its global batch (a worker killed right after a step may not have logged its
    shard), and an epoch's batches are its permutation, once.
    """
    by_step: dict[int, list[dict]] = defaultdict(list)
    for trace in trace_dir.glob("worker-*.jsonl"):
        for line in trace.read_text().splitlines():
            by_step[json.loads(line)["step"]].append(json.loads(line))
    assert sorted(by_step) == list(range(1, steps + 1))
    per_epoch = defaultdict(list)
    for step in sorted(by_step):
        last = max(r["generation"] for r in by_step[step])
        records = [r for r in by_step[step] if r["generation"] == last]
        batch = records[0]["batch"]
        shards = [i for r in records for i in r["indices"]]
        assert len(set(shards)) == len(shards) and set(shards) <= set(batch)
        if len(records) == records[0]["world_size"]:
            assert sorted(shards) == sorted(batch)
        per_epoch[records[0]["epoch"]] += batch
    n_train = len(prepare_dataset(job()).y_train)
    assert sorted(per_epoch) == list(range(epochs))
    for epoch, consumed in per_epoch.items():
        order = epoch_order(n_train, 1, epoch).tolist()
        assert consumed == (order[:len(consumed)] if partial_last and epoch == epochs - 1 else order)


def test_a_sigkilled_worker_costs_at_most_the_step_in_flight(elastrain_home, tmp_path):
    # Steps of a few milliseconds, so that the kill lands mid-job whatever the machine's speed.
    uninterrupted = run_job(job(epochs=8, max_workers=2, hidden=(256, 256)), elastrain_home)
    # Its mean step, measured on the two workers' group: the parts fit inside the whole.
    step_ms = uninterrupted.step_ms
    assert step_ms["compute"] > 0 and step_ms["all_reduce"] > 0 and step_ms["bookkeeping"] >= 0
    # Each figure is rounded to the microsecond on its own.
    assert step_ms["compute"] + step_ms["all_reduce"] + step_ms["bookkeeping"] == pytest.approx(step_ms["total"],
                                                                                                abs=0.002)
    result = run_job(job(epochs=8, max_workers=2, hidden=(256, 256)), elastrain_home,
                     options=RunOptions(chaos=parse_chaos("kill:0@step=30"), trace_dir=str(tmp_path)))
    assert result.status == "succeeded" and result.steps == uninterrupted.steps == 192
    events = RunFolder(Path(result.run_dir)).read_events()
    kill = next(e for e in events if e["kind"] == "kill")
    lost = next(e for e in events if e["kind"] == "worker_lost")
    recovered = next(e for e in events if e["kind"] == "recovered")
    assert kill["step"] < result.steps and lost["detail"]["lost"] == 1 and lost["workers"] == 1
    # The survivor kept every step it had completed; only the step in flight is redone.
    assert lost["detail"]["member_steps"] == [lost["step"]] and lost["step"] >= kill["step"]
    assert recovered["step"] > lost["step"] and recovered["duration_s"] > 0
    assert_exactly_once(tmp_path, steps=192, epochs=8)
    # The parameters only check the arithmetic: here float32 reduction-order noise (measured up
    # to 9e-4) is as large as one whole step (1.7e-3), which is why the trace above checks the steps.
    for name, value in parameters(uninterrupted).items():
        assert float((parameters(result)[name] - value).norm() / value.norm()) < 1e-2, name

def test_resume_after_the_driver_is_killed_skips_a_truncated_checkpoint(elastrain_home, tmp_path, ray_address):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=6, max_workers=2, every=8, hidden=[32], dropout=0.0))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ELASTRAIN_HOME": str(elastrain_home)}
    driver = subprocess.Popen([sys.executable, "-m", "elastrain", "run", str(spec_file), "--json"], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list(elastrain_home.glob("runs/*/checkpoints/ckpt-*.json"))) >= 2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    # The driver's workers outlive it for a moment (Ray kills them once it sees their owner gone)
    # and may write or prune checkpoints meanwhile: wait for them, not for some time.
    wait_until(lambda: not worker_processes())
    run_dir = next(elastrain_home.glob("runs/*"))
    assert not (run_dir / "result.json").exists()
    complete = sorted(p.with_suffix(".pt") for p in (run_dir / "checkpoints").glob("ckpt-*.json"))
    newest, previous = complete[-2:][::-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = resume_job(run_dir.name, elastrain_home)
    uninterrupted = run_job(parse_spec(spec_file.read_text()), elastrain_home)
    assert resumed.status == "succeeded" and resumed.steps == uninterrupted.steps == 144
    events = RunFolder(run_dir).read_events()
    skipped = [e for e in events if e["kind"] == "checkpoint_skipped"]
    assert skipped and newest.name in skipped[0]["detail"]["message"]
    start = next(e for e in events if e["kind"] == "resume")
    assert start["detail"]["from_checkpoint"] == int(previous.stem.split("-")[1])
    for name, value in parameters(uninterrupted).items():
        torch.testing.assert_close(parameters(resumed)[name], value, rtol=1e-5, atol=1e-6)


def worker_processes() -> list[int]:
    """Pids of this machine's processes that run an elastrain worker actor."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::Worker"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue   # the process ended while we looked
    return pids


def test_too_few_workers_waits_then_fails_with_a_clear_message(cli, tmp_path, elastrain_home):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=1, max_workers=2, every=5, hidden=[32], dropout=0.0).replace(
        "min: 1", "min: 2").replace("cpus_per_worker: 1, wait_timeout_s: 60", "cpus_per_worker: 4, wait_timeout_s: 3"))
    code, _, err = cli("run", spec_file)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "of the 2 workers needed could be started in 3 s" in err and "resources.workers.min" in err
    run_dir = next(elastrain_home.glob("runs/*"))
    assert "waiting" in [e["kind"] for e in RunFolder(run_dir).read_events()]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert (run_dir / "spec.yaml").is_file()


def test_workers_reserve_the_memory_they_declare_on_ray(cli, tmp_path, elastrain_home):
    """resources.memory_per_worker is asked of Ray with the CPUs: more than the node has is the
    waiting failure naming the memory; a budget that fits trains (a standby's reservation too)."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB.format(epochs=1, max_workers=2, every=5, hidden=[32], dropout=0.0).replace(
        "cpus_per_worker: 1, wait_timeout_s: 60", "cpus_per_worker: 1, memory_per_worker: 1000GiB, wait_timeout_s: 3"))
    code, _, err = cli("run", spec_file)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "could be started in 3 s (each asks for 1 CPU and 1,024,000 MiB;" in err and "memory_per_worker" in err
    fits = job(epochs=1, max_workers=3).model_copy(deep=True)
    fits.resources.memory_per_worker = 256
    assert run_job(fits, elastrain_home).status == "succeeded"


def test_workers_slow_to_load_are_starting_not_waiting(elastrain_home, tmp_path, monkeypatch):
    """`waiting` means short of resources: workers that have their CPUs but take seconds to load
    (importing torch on a busy machine; here a model factory that sleeps) log no such event."""
    (tmp_path / "slow_model.py").write_text(
        "import math\nimport time\n\nfrom torch import nn\n\n\ndef build(input_shape, n_outputs):\n"
        "    time.sleep(2.5)\n    return nn.Linear(math.prod(input_shape), n_outputs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))   # the driver builds the model too, to check it
    spec = parse_spec(JOB.format(epochs=1, max_workers=2, every=100, hidden=[32], dropout=0.0).replace(
        "{kind: mlp, hidden: [32], dropout: 0.0}", "{kind: 'python:slow_model:build'}").replace("min: 1", "min: 2"))
    assert spec.model.kind == "python:slow_model:build" and spec.resources.workers.min == 2   # JOB still matched
    result = run_job(spec, elastrain_home, options=RunOptions(extra_paths=[str(tmp_path)]))
    events = RunFolder(Path(result.run_dir)).read_events()
    assert result.status == "succeeded" and events[0]["kind"] == "start" and events[0]["workers"] == 2
    assert "waiting" not in [e["kind"] for e in events]


def test_scale_and_status_from_another_terminal(cli, elastrain_home):
    outcome = {}
    spec = job(epochs=12, max_workers=2, every=1000, hidden=(1024, 1024))   # runs for seconds
    runner = threading.Thread(target=lambda: outcome.update(result=run_job(spec, elastrain_home)))
    runner.start()
    status_file = lambda: next(elastrain_home.glob("runs/*/status.json"), None)  # noqa: E731
    wait_until(lambda: status_file() is not None and json.loads(status_file().read_text())["workers"] == 2)
    job_id = status_file().parent.name
    code, out, _ = cli("scale", job_id, "--workers", "1")
    assert code == 0 and "1 worker" in out
    wait_until(lambda: json.loads(status_file().read_text())["workers"] == 1 or not runner.is_alive())
    code, out, _ = cli("status", job_id, "--json")
    snapshot = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and snapshot["job_id"] == job_id
    runner.join(timeout=300)
    assert outcome["result"].status == "succeeded"
    assert "scale_in" in kinds(outcome["result"])
    code, out, _ = cli("status", job_id)
    assert code == 0 and "scale_in" in out and "succeeded" in out
    code, _, err = cli("scale", job_id, "--workers", "1")
    assert code == 2 and "is not running" in err
    code, _, err = cli("scale", "no-such-job", "--workers", "1")
    assert code == 2 and "no job 'no-such-job'" in err


def test_a_local_ray_job_is_scaled_and_cancelled_from_another_terminal_through_its_driver(elastrain_home,
                                                                                         ray_address):
    """`elastrain status|scale|cancel` in other processes reach a local Ray job's driver actor over
    Ray: no request file is ever written into the run folder."""
    import elastrain

    handle = elastrain.Job(job(epochs=1000, max_workers=2, every=1000)).start(home=elastrain_home)
    env = {**os.environ, "ELASTRAIN_HOME": str(elastrain_home)}
    env.pop("RAY_ADDRESS", None)   # the job's status names its cluster

    def terminal(*args):
        done = subprocess.run([sys.executable, "-m", "elastrain", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    requests = lambda: [p.name for p in Path(handle.status().run_dir).iterdir() if "request" in p.name]  # noqa: E731
    try:
        wait_until(lambda: handle.status().workers == 2)
        status = handle.status()
        assert status.ray_address == ray_address and status.driver_pid != os.getpid()
        terminal("scale", handle.job_id, "--workers", "1")
        wait_until(lambda: handle.status().workers == 1)
        assert json.loads(terminal("status", handle.job_id, "--json").splitlines()[-1])["workers"] == 1
        terminal("cancel", handle.job_id)
        result = handle.result(timeout=120)
        assert result.status == "cancelled" and not requests()
    finally:
        handle.cancel()


def test_a_job_grows_onto_its_warm_standby_which_holds_no_cpu_until_then(elastrain_home):
    """The standby is a loaded worker process that holds no CPU; a scale request makes it a
    member once the job's CPUs are reserved on its node, and a `resized` event reports the
    whole wait and the pause."""
    import ray

    from elastrain.elastic.control import JobControl

    cpus = lambda: ray.available_resources().get("CPU", 0.0)  # noqa: E731
    total = ray.cluster_resources()["CPU"]
    wait_until(lambda: cpus() == total)   # workers of earlier tests have given theirs back
    control, outcome = JobControl(), {}
    spec = job(epochs=1000, max_workers=2)
    runner = threading.Thread(target=lambda: outcome.update(result=run_job(
        spec, elastrain_home, options=RunOptions(workers=1, control=control, job_id="standby"))))
    runner.start()
    events = elastrain_home / "runs" / "standby" / "events.jsonl"
    seen = lambda kind: events.exists() and kind in events.read_text()  # noqa: E731
    try:
        wait_until(lambda: seen('"standby"'))
        # Ray's view of free resources lags its changes by up to about a second.
        wait_until(lambda: cpus() == total - 1, timeout=10)   # the one worker's: the standby holds none
        resizes = lambda: events.read_text().count('"resized"')  # noqa: E731
        control.scale(2)
        wait_until(lambda: resizes() == 1)
        wait_until(lambda: cpus() == total - 2, timeout=10)   # and the reservation for the standby
        # Shrinking gives the leaving worker's CPU back and keeps its process as the standby.
        control.scale(1)
        wait_until(lambda: resizes() == 2)
        wait_until(lambda: cpus() == total - 1, timeout=10)
        control.scale(2)
        wait_until(lambda: resizes() == 3)
    finally:
        control.cancel()
        runner.join(timeout=120)
    assert outcome["result"].status == "cancelled"
    recorded = RunFolder(Path(outcome["result"].run_dir)).read_events()
    grown = [e for e in recorded if e["kind"] == "scale_out"]
    assert [(e["workers"], e["detail"]["from_standby"]) for e in grown] == [(2, 1), (2, 1)]
    assert [e["kind"] for e in recorded].count("standby") == 1   # the second grow started no process
    resized = [e for e in recorded if e["kind"] == "resized"]
    assert [(e["detail"]["from_workers"], e["workers"]) for e in resized] == [(1, 2), (2, 1), (1, 2)]
    for event in resized:
        assert event["detail"]["first_step_at"] > event["detail"]["asked_at"]
        assert 0 < event["detail"]["pause_s"] <= event["duration_s"]


def test_chaos_strings_are_checked(cli):
    assert parse_chaos("scale=2@step=5, kill@step=3") == sorted(parse_chaos("kill@step=3,scale=2@step=5"),
                                                                  key=lambda a: a.step)
    code, _, err = cli("run", REPO / "examples" / "demo.yaml", "--chaos", "explode@step=3")
    assert code == 2 and "--chaos" in err and "kill@step=40" in err



class Warnings:
    """A progress sink that keeps the warnings."""

    def __init__(self):
        self.seen = []

    def phase(self, text):
        pass

    def start(self, total_steps, steps_per_epoch):
        pass

    def advance(self, step, loss, workers):
        pass

    def epoch(self, epoch, metrics):
        pass

    def warn(self, message):
        self.seen.append(message)


def test_more_workers_than_cores_on_one_machine_is_warned_about(elastrain_home):
    cores = os.cpu_count()
    crowded = parse_spec(JOB.format(epochs=1, max_workers=cores + 1, every=1000, hidden=[8], dropout=0.0)
                         .replace("cpus_per_worker: 1", "cpus_per_worker: 0.25"))
    sink = Warnings()
    assert run_job(crowded, elastrain_home, sink).status == "succeeded"
    assert [w for w in sink.seen if f"up to {cores + 1} workers on this machine's {cores} cores" in w]
    fitting = Warnings()
    run_job(job(epochs=1, max_workers=cores, hidden=[8]), elastrain_home, fitting)
    assert not [w for w in fitting.seen if "cores" in w]


def test_workers_train_on_the_rows_the_driver_read_and_never_read_the_data_again(elastrain_home, tmp_path,
                                                                                  monkeypatch):
    """In-memory data is read and prepared once per job, by the driver: its workers, the first two
    and the one that replaces a killed worker (the job needs two), get those rows through Ray's
    object store. The CSV is deleted once the driver has read it, so a worker that opened the
    source itself would fail to find it."""
    from sklearn.datasets import load_iris

    import elastrain.elastic.job as job_module

    csv = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(csv, index=False)
    build_learner = job_module.build_learner
    opened = []

    def driver_reads_then_the_file_goes(spec, *args, **kwargs):
        learner = build_learner(spec, *args, **kwargs)
        csv.unlink()
        opened.append(learner.data.n_train)
        return learner

    monkeypatch.setattr(job_module, "build_learner", driver_reads_then_the_file_goes)
    spec = parse_spec(JOB.format(epochs=5, max_workers=2, every=1000, hidden=[8], dropout=0.0).replace(
        "'builtin:digits'", f"'csv:{csv}', target: target").replace("min: 1", "min: 2"))
    result = run_job(spec, elastrain_home, options=RunOptions(chaos=parse_chaos("kill@step=3")))
    assert result.status == "succeeded" and result.steps == 10, result.message
    assert opened == [120] and not csv.exists()
    events = [(e["kind"], e["workers"]) for e in RunFolder(Path(result.run_dir)).read_events()]
    assert ("start", 2) in events and ("recovered", 2) in events, events
