"""A job's driver as a named Ray actor, and the calls that reach it from any process.

The driver runs the job (`run_job` or `resume_job`) in a thread of its own process and takes
cancel, scale and interrupt requests. Every job the server runs has one, detached, so that the
job outlives the server; every local job on Ray has one too, owned by the `elastrain run` that
started it. Any process connected to the same Ray cluster finds a job's driver by the job id
(`find_driver`): that is how `elastrain scale|cancel|status` reach a Ray job from another
terminal, and how a restarted server re-attaches to its jobs.

A job that trains its one worker in a local process (`runs_in_process`) is driven where it runs
and is reached through its run folder instead.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elastrain.elastic.chaos import ChaosAction
from elastrain.elastic.connect import connect_ray
from elastrain.elastic.control import JobControl
from elastrain.elastic.events import RecordSink
from elastrain.errors import JobInterrupted, UserError, first_line
from elastrain.runs import JobResult, JobState, JobStatus, RunFolder, absolute_paths, new_job_id
from elastrain.spec import JobSpec

if TYPE_CHECKING:   # the runner (torch, the data stack) is imported where a job runs, not by the server
    from elastrain.elastic.job import RunOptions

log = logging.getLogger("elastrain.driver")

NAMESPACE = "elastrain"   # the Ray namespace every driver actor is named in
# How often a client following a driver asks for its progress, and how long a server's loop
# waits for one driver's answer before counting it as unreachable this pass.
POLL_S = 0.1
# Concurrent calls one driver serves (its `wait` blocks one of them for the job's whole life).
DRIVER_CONCURRENCY = 8
# A federated job's driver also serves its clients' requests, each of which may wait (a long poll)
# for up to `federated.coordinator.POLL_S`: one thread per client waiting, for this many clients.
FEDERATED_CONCURRENCY = 256


def actor_name(job_id: str) -> str:
    """The name the driver of `job_id` has in `NAMESPACE`."""
    return f"job:{job_id}"


def runs_in_process(spec: JobSpec, chaos: list[ChaosAction] | tuple[ChaosAction, ...] = ()) -> bool:
    """Whether the job trains its one worker in its driver's process (no Ray workers): it can
    never grow past one worker and injects no faults."""
    return spec.resources.workers.max == 1 and not chaos


@dataclass(frozen=True)
class DriverLaunch:
    """What a driver needs to run one job.

    Attributes:
        job_id: the job (its run folder is `home/runs/job_id`).
        home: ELASTRAIN_HOME as the driver's node sees it.
        spec: the job's spec; None to resume the job from its run folder's spec and checkpoints.
        workers: the workers to start with (default: the spec's maximum).
        extra_paths: folders user models are imported from (put on the driver's `sys.path`).
        chaos: faults to inject.
        sink: where the job's events and metrics go besides its run folder (a picklable
            `RecordSink`, used in the driver's process).
        started_at: when the run was asked for (epoch seconds; default: when the driver starts it).
    """

    job_id: str
    home: str
    spec: JobSpec | None
    workers: int | None = None
    extra_paths: tuple[str, ...] = ()
    chaos: tuple[ChaosAction, ...] = ()
    sink: RecordSink | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class DriverOutcome:
    """How a driver's run of its job ended.

    Attributes:
        status: SUCCEEDED, FAILED or CANCELLED (the job ended), or INTERRUPTED (the driver was
            asked to stop; the job stays resumable from its checkpoints).
        result: the job's result (None when it ended before training: bad data, too few workers).
        message: why it failed, or how it was stopped.
        error: the expected error that ended it before training, as raised.
    """

    status: JobState
    result: JobResult | None = None
    message: str | None = None
    error: UserError | None = None


@dataclass(frozen=True)
class ProgressUpdate:
    """What a driver's progress sink received since a client's last call (see `ProgressLog`)."""

    calls: tuple[tuple[Any, ...], ...]            # ("phase" | "start" | "epoch" | "warn", *args), in order
    advance: tuple[int, float, int] | None        # the latest (step, loss, workers)
    next: int                                     # the `since` of the next call


@dataclass
class ProgressLog:
    """A progress sink that keeps what it receives for a client in another process to replay
    (`ProgressSink` is called in the driver; the bar is drawn in the CLI). Thread-safe."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    latest: tuple[int, float, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def phase(self, text: str) -> None:
        with self.lock:
            self.calls.append(("phase", text))

    def start(self, total_steps: int, steps_per_epoch: int) -> None:
        with self.lock:
            self.calls.append(("start", total_steps, steps_per_epoch))

    def advance(self, step: int, loss: float, workers: int) -> None:
        with self.lock:
            self.latest = (step, loss, workers)

    def epoch(self, epoch: int, metrics: dict) -> None:
        with self.lock:
            self.calls.append(("epoch", epoch, metrics))

    def warn(self, message: str) -> None:
        with self.lock:
            self.calls.append(("warn", message))

    def since(self, index: int) -> ProgressUpdate:
        with self.lock:
            return ProgressUpdate(tuple(self.calls[index:]), self.latest, len(self.calls))


class JobDriver:
    """The body of a driver actor (see the module docstring); built by `launch_driver`."""

    def __init__(self, launch: DriverLaunch) -> None:
        import ray

        sys.path[:0] = [p for p in launch.extra_paths if p not in sys.path]
        self.launch = launch
        self.control = JobControl()
        self.progress_log = ProgressLog()
        self.outcome: DriverOutcome | None = None
        self.ended = threading.Event()
        self.ray_address = ray.get_runtime_context().gcs_address
        # a federated job's RoundCoordinator, which its clients' requests reach
        self.coordinator = _coordinator(launch)
        threading.Thread(target=self._drive, name=f"driver-{launch.job_id}", daemon=True).start()

    def _drive(self) -> None:
        from elastrain.elastic.job import RunOptions, resume_job, run_job

        launch, home = self.launch, Path(self.launch.home)
        options = RunOptions(chaos=list(launch.chaos), extra_paths=list(launch.extra_paths), job_id=launch.job_id,
                             workers=launch.workers, control=self.control, ray_address=self.ray_address,
                             sink=launch.sink, started_at=launch.started_at)
        try:
            if self.coordinator is not None:
                result = self._serve_rounds()
            elif launch.spec is None:
                result = resume_job(launch.job_id, home, self.progress_log, options)
            else:
                result = run_job(launch.spec, home, self.progress_log, options)
            self.outcome = DriverOutcome(result.status, result, result.message)
        except JobInterrupted as exc:
            self.outcome = DriverOutcome(JobState.INTERRUPTED, message=str(exc))
        except UserError as exc:
            self.outcome = DriverOutcome(JobState.FAILED, message=exc.line(), error=exc)
        except Exception as exc:   # an unexpected error ends this job, not its driver
            log.exception("job %s crashed", launch.job_id)
            self.outcome = DriverOutcome(JobState.FAILED, message=f"internal error: {first_line(exc)}")
        self.ended.set()

    def _serve_rounds(self) -> JobResult:
        """A federated job's rounds, from round 1 (a driver that resumes one starts it again)."""
        from elastrain.federated.serve import serve_rounds

        folder = RunFolder.of(Path(self.launch.home), self.launch.job_id)
        spec = self.launch.spec or folder.read_spec()
        return serve_rounds(absolute_paths(spec), folder, self.coordinator, self.control, self.launch.sink)

    def federated(self, call: str, *args: Any) -> Any:
        """A federated client's request (`api.federated`): `call` is a public method of the job's
        `RoundCoordinator`.

        Raises:
            Refused: the job is not federated, or the request does not fit its round.
        """
        from elastrain.federated.coordinator import CLIENT_CALLS, Refused

        if self.coordinator is None:
            raise Refused("this job is not federated: it takes no clients")
        if call not in CLIENT_CALLS:
            raise Refused(f"no federated call '{call}'")
        return getattr(self.coordinator, call)(*args)

    def wait(self, timeout: float | None = None) -> DriverOutcome | None:
        """The outcome once the job's run has ended, or None after `timeout` seconds."""
        self.ended.wait(timeout)
        return self.outcome

    def status(self) -> JobStatus:
        """The job's status as its runner last recorded it."""
        folder = RunFolder.of(Path(self.launch.home), self.launch.job_id)
        return folder.read_status() or JobStatus(self.launch.job_id, JobState.STARTING, ray_address=self.ray_address)

    def progress(self, since: int = 0) -> ProgressUpdate:
        """The progress reported since the call that returned `since` as `next`."""
        return self.progress_log.since(since)

    def scale(self, workers: int) -> None:
        """Ask the job to run on `workers` workers (at its next step boundary)."""
        self.control.scale(workers)

    def cancel(self) -> None:
        """Ask the job to stop after its current step (a federated job: now) and end as cancelled."""
        self.control.cancel()
        if self.coordinator is not None:
            self.coordinator.close()

    def interrupt(self) -> None:
        """Ask the job to stop after its current step without ending (it stays resumable)."""
        self.control.interrupt()


def _coordinator(launch: DriverLaunch) -> Any:
    """The rounds of `launch`'s job if it is federated, else None (also when its run folder cannot
    be read: the driver's run then says why, as for any job)."""
    try:
        spec = launch.spec or RunFolder.find(Path(launch.home), launch.job_id).read_spec()
    except UserError:
        return None
    if spec.federated is None:
        return None
    from elastrain.federated.coordinator import RoundCoordinator

    return RoundCoordinator(spec.federated, spec.train.seed)


def launch_driver(launch: DriverLaunch, detached: bool) -> Any:
    """Start the driver actor of `launch.job_id` on the Ray cluster this process is connected to.

    A job whose one worker trains in the driver (`runs_in_process`) reserves that worker's CPUs
    and GPUs for the driver; any other job's driver holds none (its workers hold their own).

    Args:
        detached: the driver outlives this process (the server's jobs); otherwise it ends with it.

    Returns:
        The actor's handle.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    spec = launch.spec
    if spec is None:
        spec = RunFolder.find(Path(launch.home), launch.job_id).read_spec()
    own = runs_in_process(spec, launch.chaos)
    resources = spec.resources
    # The driver writes the run folder under `launch.home`, a folder of this node: it runs here. A
    # driver that trains the job's one worker itself needs that worker's CPUs, which this node (a
    # head with none, say) may lack: it prefers this node and goes elsewhere only then.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=own)
    actor = ray.remote(JobDriver).options(
        name=actor_name(launch.job_id), namespace=NAMESPACE, lifetime="detached" if detached else None,
        num_cpus=resources.cpus_per_worker if own else 0, num_gpus=resources.gpus_per_worker if own else 0,
        memory=(resources.memory_bytes or None) if own else None,
        max_concurrency=FEDERATED_CONCURRENCY if spec.federated else DRIVER_CONCURRENCY, max_restarts=0,
        scheduling_strategy=here)
    return actor.remote(launch)


def find_driver(job_id: str) -> Any | None:
    """The handle of `job_id`'s driver actor on the Ray cluster this process is connected to,
    or None if it has none (it ended, or it never ran on this cluster)."""
    import ray

    try:
        return ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
    except ValueError:
        return None


def run_here(spec: JobSpec | None, home: Path, progress: Any | None, options: RunOptions) -> JobResult:
    """Run a job to its end from this process: in it when the job trains one worker here
    (`runs_in_process`), otherwise on a driver actor this process owns (`drive`).

    Args:
        spec: the job's spec; None to resume `options.job_id` from its run folder.

    Raises:
        UserError: the job could not run, or cannot be resumed.
        JobInterrupted: `options.control` was interrupted.
    """
    from elastrain.elastic.job import resume_job, run_job

    options = replace(options, started_at=options.started_at or time.time())   # before Ray starts: one clock
    if spec is None:
        folder = RunFolder.find(home, options.job_id)   # an id, a prefix of one, or a job name
        options = replace(options, job_id=folder.job_id)
        resumed = folder.read_spec()
        if runs_in_process(resumed, options.chaos):
            return resume_job(options.job_id, home, progress, options)
        folder.check_data(resumed)   # before Ray starts: changed data is refused at once
    elif runs_in_process(spec, options.chaos):
        return run_job(spec, home, progress, options)
    else:
        spec = absolute_paths(spec)   # the driver actor may run in another folder
    launch = DriverLaunch(options.job_id or new_job_id(spec.name), str(home), spec, options.workers,
                          tuple(options.extra_paths), tuple(options.chaos), started_at=options.started_at)
    return drive(launch, progress, options.control or JobControl())


def drive(launch: DriverLaunch, progress: Any | None, control: JobControl) -> JobResult:
    """Run a job to its end on a driver actor owned by this process, replaying its progress to
    `progress` and passing on what `control` is asked (Ctrl-C interrupts the job).

    Connects to the Ray cluster at RAY_ADDRESS, or starts an embedded one, for the run.

    Raises:
        UserError: the job could not run (as `run_job` raises it).
        JobInterrupted: `control` was interrupted; the job stopped after its step in flight.
    """
    import os

    import ray

    if progress is not None and not ray.is_initialized():
        progress.phase("starting Ray" if not os.environ.get("RAY_ADDRESS") else "joining the Ray cluster")
    started_here = connect_ray(os.environ.get("RAY_ADDRESS"))
    if progress is not None:
        progress.phase("starting the job's driver")
    try:
        driver = launch_driver(launch, detached=False)
    except ValueError:   # the name is taken: a driver of this job is alive
        raise UserError(f"job {launch.job_id} is running under another driver", where="Ray",
                        fix=f"see `elastrain status {launch.job_id}`; cancel it first to start it again") from None
    try:
        outcome = _follow(driver, progress, control)
    except ray.exceptions.RayActorError as exc:
        from elastrain.elastic.job import resume_hint

        folder = RunFolder.of(Path(launch.home), launch.job_id)
        raise UserError(f"the driver of job {launch.job_id} died ({first_line(exc)})", where="Ray",
                        fix=resume_hint(folder.read_spec(), folder), exit_code=1) from None
    finally:
        ray.kill(driver)
        if started_here:
            ray.shutdown()
    if outcome.error is not None:
        raise outcome.error
    if outcome.status is JobState.INTERRUPTED:
        raise JobInterrupted(outcome.message)
    return outcome.result


def _follow(driver: Any, progress: Any | None, control: JobControl) -> DriverOutcome:
    import ray

    ended = driver.wait.remote()
    since, asked = 0, set()
    while True:
        done, _ = ray.wait([ended], timeout=POLL_S)
        if progress is not None:
            update = ray.get(driver.progress.remote(since))
            for name, *args in update.calls:
                getattr(progress, name)(*args)
            if update.advance is not None:   # reported only after "start", which is replayed first
                progress.advance(*update.advance)
            since = update.next
        if done:
            return ray.get(ended)
        for request, wanted in (("interrupt", control.interrupt_requested()), ("cancel", control.cancel_requested())):
            if wanted and request not in asked:
                getattr(driver, request).remote()
                asked.add(request)
        workers = control.take_scale()
        if workers is not None:
            driver.scale.remote(workers)


def ask(job_id: str, request: str, *args: Any, timeout: float = 10.0) -> bool:
    """Send `request` (scale, cancel, interrupt) to `job_id`'s driver on the Ray cluster this
    process is connected to, and wait up to `timeout` seconds until the driver has recorded it.

    Returns:
        Whether the job has a driver there.
    """
    import ray

    driver = find_driver(job_id)
    if driver is None:
        return False
    ray.get(getattr(driver, request).remote(*args), timeout=timeout)
    return True
