"""The live scheduler on an autoscaling multi-node Ray cluster; run by tests/test_live_scheduler.py.

`python -m tests.live_scheduler_scenario WORK_DIR` (from the repository root) starts a local Ray
cluster whose autoscaler rents fake nodes (Ray's FakeMultiNodeProvider: each node is a raylet on
this machine), runs the server's job loop on it in two phases, and prints one JSON line:

- "fifo": FifoPacking (the server's default) on the head's 2 CPUs; job A arrives first, B and C
  (in that order) once A runs on 2 workers; A is cancelled once it has grown back to 2 workers
  after C.
- "goodput": GoodputPolicy; D, E and F arrive together and need 3 CPUs: the policy asks for a
  second node, the autoscaler adds it, F starts there; D and E are cancelled after F succeeded
  and the node is given back. D and E may not grow: once measured, a long job that may would be
  scaled up, with nodes rented for it, and this phase is about renting for a job that does not fit.

Each phase reports the policy's decisions, the jobs' events and times, the node counts Ray held,
and the resource request the autoscaler holds. Everything listens on 127.0.0.1; the process makes
itself the reaper of its orphaned descendants (the fake nodes' raylets are not children of the
nodes that start them) and kills those left at the end by their process ids.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

HEAD_TYPE = "ray.head.default"
HEAD_CPUS = 2
NODE_TYPE = "cpu_node"   # the autoscaler's worker node type: 2 CPUs, at most 2 nodes
PR_SET_CHILD_SUBREAPER = 36
FORMATIONS = ("start", "scale_in", "scale_out", "worker_lost", "resume")
JOB = ("name: {name}\ndata: {{source: 'builtin:iris'}}\nmodel: {{kind: softmax}}\n"
       "train: {{epochs: {epochs}, optimizer: adam, lr: 0.05}}\n"
       "resources: {{workers: {{min: 1, max: {max_workers}}}, wait_timeout_s: 120}}")
LONG = 1_000_000   # epochs of a job that runs until it is cancelled


def main(work: Path) -> None:
    # Before Ray is imported: loopback addresses only (Ray otherwise picks the address that
    # routes outside), and the fake provider with a fast autoscaler loop for every Ray process.
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # a test that gives up: still clean up
    import ray
    from ray.cluster_utils import Cluster

    from elastrain.elastic.connect import EMBEDDED_SYSTEM_CONFIG
    from elastrain.scheduler import NodePool

    port = _free_port()
    config = work / "autoscaler.json"
    config.write_text(json.dumps(_autoscaler_config(port)))
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": HEAD_CPUS, "node_ip_address": "127.0.0.1", "gcs_server_port": port,
            "autoscaling_config": str(config), "include_dashboard": False,
            "_system_config": EMBEDDED_SYSTEM_CONFIG,
            # The fake provider knows the head by this id; the type is what `ray up` gives a head.
            "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": "f" * 51 + "00000",
                         "RAY_NODE_TYPE_NAME": HEAD_TYPE}})
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
        pools = [NodePool(HEAD_TYPE, HEAD_CPUS, 1, 1), NodePool(NODE_TYPE, 2, 0, 2)]
        report = {"fifo": _fifo_phase(work, pools), "goodput": _goodput_phase(work, pools)}
        print(json.dumps(report))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        _kill_descendants()


def _fifo_phase(work: Path, pools: list) -> dict:
    from elastrain.api.service import JobService
    from elastrain.scheduler import FifoPacking

    store, user = _store(work / "fifo.db")
    service = JobService(store, work / "home", FifoPacking(), interval_s=0.2, node_pools=pools)
    nodes = _NodeCounter()
    _submit(store, user, "a", LONG)   # before the loop starts: its first decision is for A
    service.start()
    try:
        nodes.wait(lambda: _formed(store, "a", 2), timeout=120)
        _submit(store, user, "b", 400)
        _submit(store, user, "c", 400)
        nodes.wait(lambda: store.job("c").status == "succeeded" and _formed(store, "a", 2, after="c"), timeout=180)
        request = _autoscaler_request()
        store.update_job("a", cancel_requested=True)
        nodes.wait(lambda: store.job("a").status == "cancelled", timeout=60)
    except AssertionError:
        _explain(store, service, nodes, "abc")
        raise
    finally:
        service.stop()
    return _phase_report(store, service, nodes, request, "abc")


def _goodput_phase(work: Path, pools: list) -> dict:
    from elastrain.api.service import JobService
    from elastrain.scheduler import GoodputPolicy

    store, user = _store(work / "goodput.db")
    service = JobService(store, work / "home", GoodputPolicy(), interval_s=0.2, node_pools=pools)
    nodes = _NodeCounter()
    for name, epochs, most in (("d", LONG, 1), ("e", LONG, 1), ("f", 400, 2)):
        _submit(store, user, name, epochs, most)
    service.start()
    try:
        nodes.wait(lambda: nodes.count == 2, timeout=60)
        request = _autoscaler_request()
        nodes.wait(lambda: store.job("f").status == "succeeded", timeout=120)
        for name in "de":
            store.update_job(name, cancel_requested=True)
        nodes.wait(lambda: all(store.job(n).status == "cancelled" for n in "de"), timeout=60)
        nodes.wait(lambda: nodes.count == 1, timeout=90)
    except AssertionError:
        _explain(store, service, nodes, "def")
        raise
    finally:
        service.stop()
    return _phase_report(store, service, nodes, request, "def")


class _NodeCounter:
    """Live Ray nodes over time (each change, when first seen), sampled while the scenario waits."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self.count = 0

    def sample(self) -> None:
        import ray

        self.count = sum(1 for node in ray.nodes() if node["Alive"])
        if not self.samples or self.samples[-1][1] != self.count:
            self.samples.append((time.time(), self.count))

    def wait(self, predicate, timeout: float) -> None:
        """Return once `predicate()` is true (it sees the count sampled just before it)."""
        from tests.conftest import wait_until

        def sampled() -> bool:
            self.sample()
            return predicate()

        wait_until(sampled, timeout=timeout)


def _phase_report(store, service, nodes: _NodeCounter, request: list, names: str) -> dict:
    nodes.sample()
    jobs = {}
    for name in names:
        job = store.job(name)
        jobs[name] = {"status": job.status, "started": job.started_at.timestamp(),
                      "finished": job.finished_at.timestamp(),
                      "formations": [(e["t"], e["kind"], e["workers"]) for e in store.events(name)
                                     if e["kind"] in FORMATIONS]}
    return {"decisions": [(d.t, d.workers, d.nodes) for d in service.decisions], "jobs": jobs,
            "nodes": nodes.samples, "request": request}


def _explain(store, service, nodes: _NodeCounter, names: str) -> None:
    """Print to stderr what happened so far in a phase that timed out waiting for something."""
    print(json.dumps({"decisions": [(d.t, d.workers, d.nodes) for d in service.decisions], "nodes": nodes.samples,
                      "jobs": {name: {"status": store.job(name).status if store.job(name) else None,
                                      "events": [(e["t"], e["kind"], e["workers"]) for e in store.events(name)]}
                               for name in names}}), file=sys.stderr)


def _store(path: Path):
    from elastrain.store import Store, connect

    store = Store(connect(f"sqlite:///{path}"))
    user, _ = store.create_user("ada")
    return store, user


def _submit(store, user, name: str, epochs: int, max_workers: int = 2) -> None:
    from elastrain.spec import parse_spec

    spec = parse_spec(JOB.format(name=name, epochs=epochs, max_workers=max_workers))
    store.submit(user, name, spec.model_dump(mode="json"))


def _formed(store, name: str, workers: int, after: str | None = None) -> bool:
    """Whether job `name` has re-formed on `workers` workers (after job `after` finished)."""
    since = store.job(after).finished_at.timestamp() if after else 0.0
    return any(e["kind"] in FORMATIONS and e["workers"] == workers and e["t"] >= since for e in store.events(name))


def _autoscaler_request() -> list:
    """The resource request the (v1) autoscaler reads, as `request_resources` stored it."""
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL) or b"null")


def _autoscaler_config(port: int) -> dict:
    """A fake multi-node cluster: the head (2 CPUs) and up to 2 worker nodes of 2 CPUs, idle ones
    removed after 6 s. The provider is named as an external module: the wheel lacks the defaults
    file that the built-in `fake_multinode` type loads."""
    return {
        "cluster_name": "elastrain-test", "max_workers": 2, "upscaling_speed": 10.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "external",
                     "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                     "gcs_address": f"127.0.0.1:{port}", "use_node_id_as_ip": True,
                     "disable_launch_config_check": True, "disable_node_updaters": True},
        "auth": {"ssh_user": "elastrain"},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": HEAD_CPUS}, "node_config": {}, "max_workers": 0},
            NODE_TYPE: {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2}},
        "head_node_type": HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_descendants() -> None:
    """SIGKILL this process's remaining children (orphans were re-parented here) and reap them."""
    for _ in range(50):   # a killed raylet's workers are re-parented here in turn
        children = _children()
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _children() -> list[int]:
    mine = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                mine.append(int(entry.name))
    return mine


if __name__ == "__main__":
    main(Path(sys.argv[1]))
