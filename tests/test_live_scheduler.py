"""The scheduling policies driving the server's job loop on a multi-node Ray cluster: workers move
between jobs as the policy decides, the jobs run on what it decided, and its node request reaches
Ray's autoscaler, which adds and removes (fake) nodes to follow it.

The cluster runs in a subprocess (tests/live_scheduler_scenario.py): this test session may
already hold a Ray instance of its own, and one process can join only one Ray cluster.
"""

import json
import signal
import subprocess
import sys

import pytest

from elastrain.api.service import JobService, cluster_of
from elastrain.scheduler import Allocation, NodePool
from elastrain.scheduler.nodes import node_bundles
from elastrain.store import Store, connect
from tests.conftest import REPO

HEAD, NODE = "ray.head.default", "cpu_node"
POOLS = [NodePool(HEAD, 2, 1, 1), NodePool(NODE, 2, 0, 2)]


def test_a_node_request_becomes_one_bundle_of_a_whole_node_per_node():
    pools = [NodePool("small", 2, 0, 4), NodePool("big", 8, 0, 2)]
    assert node_bundles(pools, {"big": 1, "small": 2, "gone": 3}) == [{"CPU": 2}, {"CPU": 2}, {"CPU": 8}]
    assert node_bundles(pools, {"small": 0}, resource="GPU") == []


def test_the_live_cluster_counts_nodes_per_pool_and_holds_untyped_nodes_as_fixed_pools():
    cluster = cluster_of(POOLS, [(HEAD, 2.0), (NODE, 2.0), (NODE, 2.0), ("node_ab12", 4.0), ("gpu_node", 0.0)])
    assert [(p.name, p.nodes, p.max_nodes) for p in cluster.pools] == [
        ("node_ab12/4", 1, 1), (HEAD, 1, 1), (NODE, 2, 2)]
    assert cluster.slots == 10


class Scripted:
    """A policy that returns the given allocations in turn."""

    def __init__(self, *allocations: Allocation) -> None:
        self.allocations = list(allocations)

    def allocate(self, now, cluster, jobs):
        return self.allocations.pop(0)


def test_the_loop_records_each_new_decision_and_sends_only_changed_node_requests(tmp_path, monkeypatch):
    """The loop's own bookkeeping, without a cluster: Ray's request_resources and node listing are
    replaced here only to count calls; the real autoscaler receives the request in the scenario
    tests below."""
    import ray.autoscaler.sdk

    sent = []
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: sent.append(bundles))
    monkeypatch.setattr("elastrain.api.service.ray_cluster", lambda pools: cluster_of(pools, [(HEAD, 2.0)]))
    policy = Scripted(Allocation({}, nodes={HEAD: 1, NODE: 1}), Allocation({}, nodes={HEAD: 1, NODE: 1}),
                      Allocation({}), Allocation({}, nodes={HEAD: 1, NODE: 0}))
    service = JobService(Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}")), tmp_path, policy, node_pools=POOLS)
    for _ in range(4):
        service.tick()
    assert sent == [[{"CPU": 2}, {"CPU": 2}], [{"CPU": 2}]]   # an empty request keeps what is held
    assert [d.nodes for d in service.decisions] == [{HEAD: 1, NODE: 1}, {}, {HEAD: 1, NODE: 0}]
    with pytest.raises(ValueError, match="cpus or node_pools"):
        JobService(service.store, tmp_path, policy)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, multi_node_cluster_alone):
    """The scenario's report (about 80 s on 2 cores)."""
    work = tmp_path_factory.mktemp("live")
    process = subprocess.Popen([sys.executable, "-m", "tests.live_scheduler_scenario", str(work)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)   # the scenario stops its cluster on SIGTERM
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def changes(decisions: list, job: str) -> list[tuple[float, int]]:
    """(time, workers) each time the policy gave `job` a different positive number of workers."""
    runs: list[tuple[float, int]] = []
    for t, workers, _ in decisions:
        count = workers.get(job, 0)
        if count and (not runs or runs[-1][1] != count):
            runs.append((t, count))
    return runs


def assert_ran_as_decided(phase: dict) -> None:
    """Each job ran on no more workers than the policy's latest decision gave it, and reached each
    size the policy gave it while that decision stood. (It may form on fewer first: a group
    starts once its first workers are up and the others join at a later step boundary.)"""
    for job, record in phase["jobs"].items():
        decided = changes(phase["decisions"], job)
        formations = record["formations"]
        for t, kind, workers in formations:
            latest = [count for since, count in decided if since <= t]
            assert latest and workers <= latest[-1], (job, kind, workers, decided)
        ends = [since for since, _ in decided[1:]] + [record["finished"]]
        for (since, count), until in zip(decided, ends, strict=True):
            assert any(since <= t <= until and workers == count for t, _, workers in formations), (
                job, count, since, until, formations)


@pytest.mark.slow
def test_fifo_moves_workers_between_jobs_as_they_arrive_and_finish(scenario):
    phase = scenario["fifo"]
    jobs = phase["jobs"]
    assert [jobs[j]["status"] for j in "abc"] == ["cancelled", "succeeded", "succeeded"]
    # A alone took both CPUs, gave one up when B arrived, while C waited its turn behind B, and
    # took it back once C was done.
    assert [w for _, w, _ in phase["decisions"]] == [{"a": 2}, {"a": 1, "b": 1}, {"a": 1, "c": 1}, {"a": 2}, {}]
    assert jobs["c"]["started"] >= jobs["b"]["finished"]
    assert_ran_as_decided(phase)
    # FIFO does not autoscale: it asks for the nodes held, and the cluster keeps them.
    assert all(nodes == {HEAD: 1, NODE: 0} for _, _, nodes in phase["decisions"])
    assert phase["request"] == [{"CPU": 2}] and [count for _, count in phase["nodes"]] == [1]


@pytest.mark.slow
def test_goodput_rents_a_node_for_the_job_that_does_not_fit_and_gives_it_back(scenario):
    phase = scenario["goodput"]
    jobs, decisions = phase["jobs"], phase["decisions"]
    assert [jobs[j]["status"] for j in "def"] == ["cancelled", "cancelled", "succeeded"]
    # Three jobs of one worker on a 2-CPU head: the policy runs two and asks for a second node.
    first = decisions[0]
    assert first[1] == {"d": 1, "e": 1} and first[2] == {HEAD: 1, NODE: 1}
    assert phase["request"] == node_bundles(POOLS, first[2]) == [{"CPU": 2}, {"CPU": 2}]
    # The autoscaler added it, F ran once it was there, and it was removed when no longer asked for.
    counts = [count for _, count in phase["nodes"]]
    assert counts == [1, 2, 1]
    joined = phase["nodes"][1][0]
    # Once D and E have measured how long they still need, the policy would rather give one of
    # their CPUs to the short F, so its decisions may name F before the node is there; but the
    # server does not stop running jobs, and F starts only where the cluster holds it.
    f_starts = jobs["f"]["started"]
    assert f_starts > first[0] and f_starts >= joined - 1.0   # the scenario polls node counts itself
    assert jobs["f"]["formations"][0][0] > joined
    assert [nodes for _, _, nodes in decisions[-2:]] == [{HEAD: 1, NODE: 0}, {HEAD: 0, NODE: 0}]
    assert_ran_as_decided(phase)
