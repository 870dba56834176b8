"""The server's job loop on a real SQLite store: queued jobs run in order on the capacity the
policy gives them, and their events, metrics and results reach the store."""

import itertools
import logging

import pytest

from elastrain.api.service import JobService
from elastrain.scheduler import Allocation, FifoPacking
from elastrain.spec import parse_spec
from elastrain.store import Store, connect
from elastrain.store.decisions import recent_decisions
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("ray_address")   # every job's driver is an actor

QUICK = ("data: {{source: 'builtin:iris'}}\nmodel: {{kind: softmax}}\n"
         "train: {{epochs: {epochs}, optimizer: adam, lr: 0.05}}")


def run_all(store, home, cpus=1, cpu_hour_price=0.0):
    """Run the job loop until every job in the store has ended."""
    service = JobService(store, home, FifoPacking(), cpus=cpus, interval_s=0.05, cpu_hour_price=cpu_hour_price)
    service.start()
    try:
        wait_until(lambda: all(j.status in ("succeeded", "failed", "cancelled") for j in store.jobs()))
    finally:
        service.stop()


def test_queued_jobs_run_in_order_and_report_to_the_store(tmp_path, elastrain_home, caplog):
    caplog.set_level(logging.INFO, logger="elastrain.server")
    store = Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}"))
    ada, _ = store.create_user("ada")
    for i in range(3):
        spec = parse_spec(QUICK.format(epochs=30)).model_dump(mode="json") | {"name": f"job{i}"}
        store.submit(ada, f"job-{i}", spec)
    run_all(store, elastrain_home, cpu_hour_price=0.25)
    jobs = store.jobs()
    assert [j.status for j in jobs] == ["succeeded"] * 3
    # One CPU: each job started only after the one before it had finished, in submission order.
    for before, after in itertools.pairwise(jobs):
        assert before.finished_at <= after.started_at
    first = jobs[0]
    assert first.result["metrics"]["val_accuracy"] >= 0.9 and first.workers == 0
    assert [e["kind"] for e in store.events("job-0")] == ["start", "succeeded"]
    series = store.metrics("job-0")
    assert len(series["val_accuracy"]) == 30 and series["val_accuracy"][-1]["epoch"] == 30
    said = [r.getMessage() for r in caplog.records if r.name == "elastrain.server"]   # the server's own log
    for i in range(3):
        assert f"starting job job-{i} (ada) on 1 worker(s)" in said and f"job job-{i} succeeded" in said
    # The scheduler's decisions reach the store with the cluster they were made on (the cluster page).
    decided = recent_decisions(store)
    assert {job for d in decided for job in d.workers} == {"job-0", "job-1", "job-2"}
    assert all(d.cpus_total == 1.0 and d.pools[0].name == "local" and d.pools[0].nodes == 1 for d in decided)
    assert all(d.cost_per_hour == 0.25 for d in decided)   # one CPU at --cpu-hour-price 0.25
    assert all(d.cpus_used == sum(d.workers.values()) for d in decided)   # one CPU per worker


def test_a_job_whose_data_is_missing_fails_without_stopping_the_loop(tmp_path, elastrain_home):
    store = Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}"))
    ada, _ = store.create_user("ada")
    broken = parse_spec(QUICK.format(epochs=2)).model_dump(mode="json")
    broken["data"]["source"] = f"csv:{tmp_path / 'missing.csv'}"
    store.submit(ada, "broken", broken)
    store.submit(ada, "fine", parse_spec(QUICK.format(epochs=2)).model_dump(mode="json"))
    run_all(store, elastrain_home)
    broken_job, fine_job = store.jobs()
    assert broken_job.status == "failed" and "data file not found" in broken_job.message
    assert fine_job.status == "succeeded"


def test_a_running_job_can_be_cancelled_and_a_finished_one_registers_its_model(tmp_path, elastrain_home):
    store = Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}"))
    ada, _ = store.create_user("ada")
    short = parse_spec(QUICK.format(epochs=3) + "\ncheckpoint: {every_steps: 5, keep: 2}").model_dump(mode="json")
    store.submit(ada, "short", short | {"name": "short"})
    store.submit(ada, "long", parse_spec(QUICK.format(epochs=100_000)).model_dump(mode="json"))
    service = JobService(store, elastrain_home, FifoPacking(), cpus=2, interval_s=0.05)
    service.start()
    try:
        wait_until(lambda: store.job("long").status == "running"
                   and (elastrain_home / "runs" / "long" / "job.log").is_file())
        store.update_job("long", cancel_requested=True)
        wait_until(lambda: store.job("long").status == "cancelled" and store.job("short").status == "succeeded")
    finally:
        service.stop()
    assert store.job("long").message.startswith("cancelled at step")
    assert "cancelled" in [e["kind"] for e in store.events("long")]
    [model] = store.models(ada)
    assert (model.name, model.version, model.job_id) == ("short", 1, "short")
    assert len(model.data_fingerprint) == 64 and model.metrics["val_accuracy"] > 0.5
    assert "epoch 3" in (elastrain_home / "runs" / "short" / "job.log").read_text()
    recorded = store.checkpoints("short")
    assert [c["step"] for c in recorded] == [5, 10]   # 3 epochs of 4 steps
    assert all(len(c["sha256"]) == 64 and c["bytes"] > 0 for c in recorded)


class Scripted:
    """A policy that returns the given allocations in turn, then the last one again."""

    def __init__(self, *allocations: Allocation) -> None:
        self.allocations = list(allocations)

    def allocate(self, now, cluster, jobs):
        return self.allocations.pop(0) if len(self.allocations) > 1 else self.allocations[0]


def test_a_queued_job_does_not_start_on_the_cpus_of_a_running_job_the_policy_would_stop(tmp_path, elastrain_home):
    # The loop does not stop running jobs: a policy that gives the CPU of a running job to a
    # queued one (as the goodput policy may) leaves the queued one waiting instead of overbooking.
    store = Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}"))
    ada, _ = store.create_user("ada")
    store.submit(ada, "long", parse_spec(QUICK.format(epochs=100_000)).model_dump(mode="json"))
    store.submit(ada, "next", parse_spec(QUICK.format(epochs=2)).model_dump(mode="json"))
    service = JobService(store, elastrain_home, Scripted(Allocation({"long": 1}), Allocation({"next": 1})), cpus=1)
    try:
        service.tick()
        for _ in range(3):
            service.tick()
        assert store.job("long").status == "running" and store.job("next").status == "queued"
        store.update_job("long", cancel_requested=True)

        def next_done() -> bool:
            service.tick()
            return store.job("next").status == "succeeded"

        wait_until(next_done)
    finally:
        service.stop()
    assert store.job("long").status == "cancelled"
