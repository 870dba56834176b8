"""The server's job loop: start queued jobs as the policy allocates workers, resize running ones,
record how they end, and pick up after a restart. Each job's driver writes its events and
metrics into the store itself (`store.StoreSink`).

Each job runs under its own driver, a named, detached Ray actor (`elastic.driver`) running the
same runner `elastrain run` uses; this process trains nothing. A server that restarts finds its
running jobs' drivers by name and re-attaches to them: the jobs lose nothing. A job whose driver
is gone (its node died, or it was killed) is resumed from its last durable checkpoint in its run
folder (`ELASTRAIN_HOME/runs/JOB_ID`).

On an autoscaling Ray cluster the loop reads the nodes Ray holds each pass, and the policy's node
request goes to Ray's autoscaler, so the node count follows the policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from elastrain import bundle as bundles
from elastrain.elastic import DriverLaunch, DriverOutcome, find_driver, launch_driver
from elastrain.errors import UserError, first_line
from elastrain.runs import JobResult, JobState, RunFolder
from elastrain.scheduler import (
    Allocation,
    Cluster,
    GradientNoise,
    JobDemand,
    NodePool,
    Policy,
    StepObservation,
    ThroughputParams,
    fit_throughput,
)
from elastrain.scheduler.nodes import node_bundles
from elastrain.spec import validate_spec
from elastrain.store import JobInfo, Store
from elastrain.store.decisions import Decision, PoolState, record_decision
from elastrain.store.sink import StoreSink

log = logging.getLogger("elastrain.server")

# Decisions kept in JobService.decisions (the oldest are dropped).
DECISIONS_KEPT = 1000
# A job's step-time model is fitted again only when it has run on a new configuration or a
# measured step time moved by more than this fraction (medians drift a little with every report).
REFIT_TOLERANCE = 0.05


@dataclass
class _Running:
    """A job this server runs: its driver actor, and `ended`, the driver's `wait` call that
    returns the job's outcome."""

    workers: int
    driver: Any = None
    ended: Any = None
    cancelling: bool = False
    outcome: DriverOutcome | None = None


class JobService:
    """Runs the store's jobs on this machine's capacity, or on a Ray cluster's node pools.

    Args:
        store: the metadata store.
        home: ELASTRAIN_HOME (run folders live under `home/runs`).
        policy: decides the workers of each job and the nodes to hold.
        cpus: capacity shared by the jobs, fixed (used when `node_pools` is None).
        interval_s: how often the loop looks at the queue.
        artifacts: an fsspec URL that finished models are published to (default: they stay in
            their run folders).
        node_pools: the autoscaler's node types (name, CPUs per node, most nodes, price) of the
            Ray cluster this process is connected to, the head's type first (policies rent equally
            priced pools in this order); their `nodes` are ignored (counted from Ray each pass).
            With them the policy's node request goes to Ray's autoscaler.
        keep_jobs_running: `stop` leaves the jobs running under their drivers (right when the Ray
            cluster outlives this process); otherwise it stops them at a step boundary.
        cpu_hour_price: USD per CPU-hour of the fixed capacity `cpus` (its cost in the decisions).

    Attributes:
        decisions: the policy's allocations, each kept when it differs from the one before (the
            last `DECISIONS_KEPT`).
    """

    def __init__(self, store: Store, home: Path, policy: Policy, cpus: float | None = None,
                 interval_s: float = 0.5, artifacts: str | None = None,
                 node_pools: Sequence[NodePool] | None = None, keep_jobs_running: bool = False,
                 cpu_hour_price: float = 0.0) -> None:
        if cpus is None and node_pools is None:
            raise ValueError("JobService needs cpus or node_pools")
        self.artifacts = artifacts
        self.keep_jobs_running = keep_jobs_running
        self.store = store
        self.home = home
        self.policy = policy
        self.fixed = Cluster.single(cpus, cpus * cpu_hour_price) if node_pools is None else None
        self.node_pools = tuple(node_pools or ())
        self.requested: list[dict[str, float]] | None = None   # an unchanged request is not sent again
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        self.interval_s = interval_s
        self.running: dict[str, _Running] = {}
        self.fits: dict[str, tuple[list[StepObservation], ThroughputParams]] = {}   # job -> (fitted on, model)
        self.stopping = threading.Event()
        self.loop: threading.Thread | None = None

    def start(self) -> None:
        """Re-attach to the drivers of the jobs a previous server left running, resume those whose
        driver is gone from their checkpoints, then loop in a background thread.

        Raises:
            RuntimeError: this process is not connected to Ray.
        """
        import ray

        if not ray.is_initialized():
            raise RuntimeError("JobService runs its jobs on Ray: connect this process first (connect_ray)")
        for job in self.store.jobs(status=JobState.RUNNING, limit=10_000):
            driver = find_driver(job.job_id)
            if driver is not None:
                run = _Running(workers=job.workers or 0, driver=driver, ended=driver.wait.remote())
                self.running[job.job_id] = run
                log.info("re-attached to job %s", job.job_id)
                continue
            ended = RunFolder.of(self.home, job.job_id).read_result()
            if ended is not None:   # it finished just before the previous server died
                result = JobResult(**ended)
                run = _Running(workers=0, outcome=DriverOutcome(result.status, result, result.message))
                self._finish(job.job_id, run)
                continue
            self._launch(job, job.workers or job.spec["resources"]["workers"]["min"], resume=True)
        self.loop = threading.Thread(target=self._loop, name="elastrain-jobs", daemon=True)
        self.loop.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop looking at the queue. With `keep_jobs_running` the jobs go on under their drivers
        (the next server re-attaches); otherwise each stops after its current step, waiting up to
        `timeout_s` for them, and stays `running` in the store: the next server resumes it from
        its last checkpoint."""
        import ray

        self.stopping.set()
        if self.loop:
            self.loop.join()
        if self.keep_jobs_running:
            return
        for run in self.running.values():
            if run.driver is not None:
                run.driver.interrupt.remote()
        pending = [run.ended for run in self.running.values() if run.ended is not None]
        if pending:
            _, late = ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
            if late:
                log.warning("%d job(s) did not stop within %g s", len(late), timeout_s)
        for run in self.running.values():
            if run.driver is not None:
                ray.kill(run.driver)

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.tick()
            except Exception:   # the loop must outlive one bad tick; the error is logged
                log.exception("job loop tick failed")

    def tick(self) -> None:
        """One pass: finish ended jobs, copy progress, apply the policy's allocation (and, on a
        Ray cluster, send its node request to the autoscaler when it changed). Running jobs are
        resized but never stopped; a queued job starts only on capacity they leave free."""
        for job_id, run in list(self.running.items()):
            if self._ended(job_id, run):
                self._finish(job_id, run)
        queued = self.store.jobs(status=JobState.QUEUED, limit=1000)
        running = [job for job in self.store.jobs(status=JobState.RUNNING, limit=10_000) if job.job_id in self.running]
        for job in running:
            run = self.running[job.job_id]
            if run.driver is None:   # its driver is starting again (see _ended)
                self._start_driver(job, run, resume=True)
            elif job.cancel_requested and not run.cancelling:
                run.driver.cancel.remote()
                run.cancelling = True
        demands = [self._demand(job, self.running[job.job_id].workers) for job in running]
        demands += [self._demand(job, 0) for job in queued]
        cluster = self.fixed or ray_cluster(self.node_pools)
        decided = self.policy.allocate(time.time(), cluster, demands)
        self._record(decided, cluster, demands)
        if self.fixed is None and decided.nodes:
            self._request_nodes(node_bundles(cluster.pools, decided.nodes))
        allocation = decided.workers
        # This loop does not stop running jobs: one the policy gives no workers keeps its own, so a
        # queued job starts only where what is left of the cluster holds it (otherwise its workers
        # would wait for CPUs, and fail the job after its wait_timeout_s).
        slots = {demand.job_id: demand.slots_per_worker for demand in demands}
        free = cluster.slots - sum(slots[job_id] * (allocation.get(job_id, 0) or run.workers)
                                   for job_id, run in self.running.items() if job_id in slots)
        # ...and only on CPUs that running jobs have given back: a worker started before a job it
        # replaces has shrunk waits for its CPU, and Ray's autoscaler rents a node for any such
        # waiting demand, whatever the policy asked for.
        free = min(free, ray_free_cpus())
        for job in queued:
            need = allocation.get(job.job_id, 0) * slots[job.job_id]
            if need > 0 and need <= free + 1e-9:
                self._launch(job, allocation[job.job_id], resume=False)
                free -= need
        for job_id, run in self.running.items():
            wanted = allocation.get(job_id, run.workers)
            if wanted != run.workers and wanted > 0 and run.driver is not None:
                log.info("job %s: %d -> %d workers", job_id, run.workers, wanted)
                run.driver.scale.remote(wanted)
                run.workers = wanted
                self.store.update_job(job_id, workers=wanted)

    def _record(self, allocation: Allocation, cluster: Cluster, demands: list[JobDemand]) -> None:
        """Keep the allocation, with the cluster it was made on, when it differs from the last one
        (in `decisions` and in the store, for the dashboard)."""
        last = self.decisions[-1] if self.decisions else None
        if last is not None and (last.workers, last.nodes) == (allocation.workers, allocation.nodes):
            return
        slots = {demand.job_id: demand.slots_per_worker for demand in demands}
        pools = tuple(PoolState(pool.name, pool.nodes, pool.slots_per_node, pool.price_per_hour, pool.spot)
                      for pool in cluster.pools)
        decision = Decision(time.time(), dict(allocation.workers), dict(allocation.nodes), pools,
                            cpus_total=cluster.slots,
                            cpus_used=sum(n * slots.get(job_id, 1.0) for job_id, n in allocation.workers.items()),
                            cost_per_hour=sum(pool.nodes * pool.price_per_hour for pool in cluster.pools))
        self.decisions.append(decision)
        record_decision(self.store, decision)

    def _request_nodes(self, bundles: list[dict[str, float]]) -> None:
        """Send the request only when it changed: each call makes the autoscaler re-plan."""
        if bundles == self.requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
        self.requested = bundles
        log.info("asked the autoscaler for %d nodes: %s", len(bundles), bundles)

    def _demand(self, job: JobInfo, current: int) -> JobDemand:
        """What the job asks the policy for; a user's resize request narrows its range to that size.

        A running job's run folder adds what its engine measured (status.json): its step-time
        model fitted to the step times observed, the most workers it ran on, the steps left and
        its gradient noise. The batch size is the job's own (it is not adapted live).
        """
        resources = job.spec["resources"]
        low, high = resources["workers"]["min"], resources["workers"]["max"]
        if job.requested_workers:
            low = high = job.requested_workers
        demand = JobDemand(job.job_id, job.seq, low, high, resources["cpus_per_worker"], current)
        status = RunFolder.of(self.home, job.job_id).read_status() if current > 0 else None
        if status is None or status.batch_size is None:
            return demand
        observations = [StepObservation(o.nodes, o.workers, o.local_batch, o.step_time)
                        for o in status.observations if o.step_time and o.step_time > 0]
        noise = None
        if status.grad_sqr is not None and status.grad_var is not None:
            noise = GradientNoise(status.grad_sqr, status.grad_var)
        return replace(demand, batch_size=status.batch_size, speed=self._speed(job.job_id, observations),
                       max_workers_seen=status.max_workers_seen, noise=noise,
                       remaining=max(float(status.total_steps - status.step), 0.0))

    def _speed(self, job_id: str, observations: list[StepObservation]) -> ThroughputParams | None:
        """The job's fitted step-time model; the previous fit while the observations have not
        changed beyond `REFIT_TOLERANCE` (the loop ticks far more often than they do)."""
        if not observations:
            return None
        cached = self.fits.get(job_id)
        if cached is not None and _close(cached[0], observations):
            return cached[1]
        params = fit_throughput(observations)
        self.fits[job_id] = (observations, params)
        return params

    def _launch(self, job: JobInfo, workers: int, resume: bool) -> None:
        run = _Running(workers=workers)
        self.store.update_job(job.job_id, status=JobState.RUNNING, workers=workers,
                              started_at=job.started_at or datetime.now(UTC))
        self.running[job.job_id] = run
        log.info("%s job %s (%s) on %d worker(s)", "resuming" if resume else "starting", job.job_id, job.owner,
                 workers)
        self._start_driver(job, run, resume)

    def _start_driver(self, job: JobInfo, run: _Running, resume: bool) -> None:
        """Start the job's driver actor; a spec or bundle that cannot be used fails the job at once.
        A name still held by a driver that is going away is tried again on the next pass."""
        try:
            spec, code_paths = validate_spec(job.spec, job.job_id), []
            if job.bundle:   # the code and data it was submitted with (the driver imports the model)
                spec, code_paths = bundles.resolve(spec, self.home / "bundles" / job.bundle)
        except UserError as exc:
            run.outcome = DriverOutcome(JobState.FAILED, message=exc.line())
            return
        resumable = resume and RunFolder.of(self.home, job.job_id).spec_file.is_file()
        sink = StoreSink(self.store.engine.url.render_as_string(hide_password=False), job.job_id)
        launch = DriverLaunch(job.job_id, str(self.home), None if resumable else spec, run.workers, tuple(code_paths),
                              sink=sink)
        try:
            run.driver = launch_driver(launch, detached=True)
        except ValueError:   # the name is still taken
            log.info("the previous driver of job %s still holds its name; trying again", job.job_id)
            return
        run.ended = run.driver.wait.remote()

    def _ended(self, job_id: str, run: _Running) -> bool:
        """Whether the job has ended (its outcome is in `run.outcome`). A driver that died, or
        stopped without ending the job, is replaced by one that resumes the job from its last
        durable checkpoint."""
        import ray

        if run.outcome is not None:
            return True
        if run.ended is None or not ray.wait([run.ended], timeout=0)[0]:
            return False
        try:
            run.outcome = ray.get(run.ended)
        except ray.exceptions.RayActorError as exc:
            ended = RunFolder.of(self.home, job_id).read_result()
            if ended is not None:   # it wrote its result, then died
                result = JobResult(**ended)
                run.outcome = DriverOutcome(result.status, result, result.message)
                return True
            log.warning("the driver of job %s died (%s); resuming the job from its last checkpoint", job_id,
                        first_line(exc))
        if run.outcome is not None and run.outcome.status is not JobState.INTERRUPTED:
            return True
        run.outcome = None
        ray.kill(run.driver)
        run.driver = run.ended = None   # the next pass starts another
        return False

    def _finish(self, job_id: str, run: _Running) -> None:
        import ray

        outcome = run.outcome
        result = outcome.result.to_dict() if outcome.result is not None else None
        log.info("job %s %s%s", job_id, outcome.status, f": {outcome.message}" if outcome.message else "")
        self.store.update_job(job_id, status=outcome.status, result=result, message=outcome.message,
                              finished_at=datetime.now(UTC), workers=0)
        if run.driver is not None:   # a detached actor ends only when told
            ray.kill(run.driver)
        del self.running[job_id]
        self.fits.pop(job_id, None)
        if outcome.status is JobState.SUCCEEDED and result and result.get("model_path"):
            job = self.store.job(job_id)
            owner = self.store.user(job.owner)
            spec_hash = hashlib.sha256(json.dumps(job.spec, sort_keys=True).encode()).hexdigest()
            url = result["model_path"]
            if self.artifacts:
                from elastrain.train.artifact import publish_model

                url = publish_model(Path(url), f"{self.artifacts.rstrip('/')}/models/{owner.name}/{job.name}/{job_id}")
            self.store.register_model(owner, job.name, url, result["metrics"], spec_hash,
                                      result.get("data_fingerprint") or "", job_id,
                                      size_bytes=result.get("model_bytes"))


def ray_cluster(pools: Sequence[NodePool]) -> Cluster:
    """The Ray cluster this process is connected to, as `pools` holding its live nodes now (see
    :func:`cluster_of`; a node's type is the autoscaler's node type it was started as)."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    return cluster_of(pools, ((node.ray_node_type_name, node.total_resources().get("CPU", 0.0))
                              for node in [*status.active_nodes, *status.idle_nodes]))


def ray_free_cpus() -> float:
    """CPUs the Ray cluster this process is connected to has not given to any task or actor (as
    Ray's resource view holds them, updated within about a second); infinite without Ray."""
    import ray

    if not ray.is_initialized():
        return float("inf")
    return float(ray.available_resources().get("CPU", 0.0))


def cluster_of(pools: Sequence[NodePool], live: Iterable[tuple[str, float]]) -> Cluster:
    """`pools` with `nodes` set to how many of the `live` nodes (node type, CPUs) are of their
    type. Live nodes of other types (Ray names a node started without one `node_<id>`) form fixed
    pools, one per type and size, so that the cluster's slots are all the CPUs held; they come
    first, so a policy that fills the cheapest slots first, ties in pool order, uses them before
    renting."""
    names = {pool.name for pool in pools}
    held: Counter[str] = Counter()
    other: Counter[tuple[str, float]] = Counter()
    for node_type, cpus in live:
        if node_type in names:
            held[node_type] += 1
        elif cpus > 0:
            other[(node_type, cpus)] += 1
    fixed = tuple(NodePool(f"{node_type}/{cpus:g}", cpus, count, count) for (node_type, cpus), count in other.items())
    return Cluster(fixed + tuple(replace(pool, nodes=held[pool.name]) for pool in pools))


def _close(fitted: list[StepObservation], now: list[StepObservation]) -> bool:
    """Whether `now` holds the configurations of `fitted`, with step times within `REFIT_TOLERANCE`."""
    before = {(o.nodes, o.workers, o.local_batch): o.step_time for o in fitted}
    after = {(o.nodes, o.workers, o.local_batch): o.step_time for o in now}
    return before.keys() == after.keys() and all(
        abs(after[key] - seconds) <= REFIT_TOLERANCE * seconds for key, seconds in before.items())
