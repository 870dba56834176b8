"""Running a whole job: data check, workers (in this process or on Ray), saved model, result.

A job whose `resources.workers.max` is 1 (and that injects no faults) runs its one worker in
this process; any other runs on an elastic group of Ray actors. Both run the same `Worker`.
Everything a job records goes to its run folder (`RunFolder`).
"""

from __future__ import annotations

import io
import math
import os
import statistics
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch

from elastrain.data.rows import DataSource, handed_over
from elastrain.elastic.chaos import ChaosAction
from elastrain.elastic.checkpoints import CheckpointInfo, CheckpointStore
from elastrain.elastic.connect import connect_ray, ray_session
from elastrain.elastic.control import JobControl
from elastrain.elastic.controller import ElasticController, Outcome
from elastrain.elastic.driver import runs_in_process
from elastrain.elastic.events import Event, EventLog, RecordSink
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.pool import WorkerPool
from elastrain.elastic.reports import Progress, RunResult, RunStatus
from elastrain.elastic.worker import Worker
from elastrain.errors import JobInterrupted, UserError, first_line
from elastrain.prep.auto import prepared_for
from elastrain.runs import JobResult, JobState, JobStatus, Observation, RunFolder, absolute_paths, new_job_id
from elastrain.spec import JobSpec
from elastrain.train.artifact import WriteFailed
from elastrain.train.learner import Learner, build_learner

# A job records at most about this many training-loss points: one per step, or the mean over
# blocks of steps for longer jobs.
MAX_LOSS_POINTS = 2000
# Step intervals kept per configuration: its step time is their median (recent steps count, and
# a long job's status stays small).
STEP_TIME_WINDOW = 256


class ProgressSink(Protocol):
    """Receives a job's progress (the CLI draws it as a progress bar)."""

    def phase(self, text: str) -> None: ...   # what the job is doing before it trains
    def start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def advance(self, step: int, loss: float, workers: int) -> None: ...
    def epoch(self, epoch: int, metrics: dict) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass
class RunOptions:
    """How to run a job beyond its spec."""

    chaos: list[ChaosAction] = field(default_factory=list)
    extra_paths: list[str] = field(default_factory=list)   # where user models are imported from
    trace_dir: str | None = None                            # test hook: record every step's sample shards
    job_id: str | None = None                               # given by the server; default: a new one
    workers: int | None = None                              # workers to start with (default workers.max)
    control: JobControl | None = None   # where cancel and resize requests come from (default: the run folder)
    ray_address: str | None = None      # set by a driver actor: the Ray cluster it is reached on
    sink: RecordSink | None = None      # where events and metrics go besides the run folder
    started_at: float | None = None     # when the run was asked for (epoch seconds; default: run_job's call)
    on_ray: bool = False                # run on Ray workers even with workers.max 1 (a study's trials)
    pool: WorkerPool | None = None      # loaded workers shared with other jobs of this process
    gate: EpochGate | None = None       # asked at each epoch's end whether the job stops there


def run_job(spec: JobSpec, home: Path, progress: ProgressSink | None = None,
            options: RunOptions | None = None) -> JobResult:
    """Train `spec`, save the model, and record the result under `home/runs`.

    Returns:
        The result; a diverging loss gives status FAILED with the last good state saved.

    Raises:
        UserError: the data or the spec cannot be used (nothing is written then), or too few
            workers could be started.
    """
    if spec.federated is not None:
        raise UserError("a federated job trains in rounds over clients that connect to a server", where="federated",
                        fix="submit it to a server (`elastrain submit`) and start its clients (`elastrain client`), "
                            "or try it here with `elastrain federated simulate SPEC --clients N`")
    started = (options.started_at if options and options.started_at else None) or time.time()
    spec = absolute_paths(spec)   # the run folder records where the data is, not where we are
    spec = prepared_for(spec, home, ray_session, progress.phase if progress else None)
    if progress:
        progress.phase("loading data")
    learner = build_learner(spec)   # checks data and spec before anything is written
    learner.check()
    options = options or RunOptions()
    folder = RunFolder.of(home, options.job_id or new_job_id(spec.name))
    folder.create(spec)
    for message in learner.data.warnings:   # what the data reader dropped or doubts, said before training
        folder.log(f"warning: {message}")
        if progress:
            progress.warn(message)
    return _execute(spec, learner, folder, progress, options, started, resume=False)


def resume_job(job_id: str, home: Path, progress: ProgressSink | None = None,
               options: RunOptions | None = None) -> JobResult:
    """Continue a job whose driver died, from its newest valid durable checkpoint, on the data
    it started on.

    Raises:
        UserError: the job does not exist or has already ended, or its data changed.
    """
    started = (options.started_at if options and options.started_at else None) or time.time()
    folder = RunFolder.find(home, job_id)
    ended = folder.read_result()
    if ended is not None:
        raise UserError(f"job {job_id} already ended ({ended['status']})", where=str(folder.path),
                        fix="start a new job with `elastrain run`")
    spec = folder.read_spec()
    folder.check_data(spec)
    learner = build_learner(spec)
    if _last_checkpoint(spec, folder) is None:
        started_over = f"job {folder.job_id} kept no checkpoint: it starts again at step 0"
        folder.log(f"warning: {started_over}")
        if progress:
            progress.warn(f"{started_over}{_how_to_keep(spec)}")
    return _execute(spec, learner, folder, progress, options or RunOptions(), started, resume=True)


class _StepTimes:
    """The step times measured on one configuration: the latest intervals and how many in all."""

    def __init__(self, carried: Observation | None = None) -> None:
        self.window: deque[float] = deque(maxlen=STEP_TIME_WINDOW)
        self.steps = carried.steps if carried else 0
        self.carried = carried.step_time if carried else None   # from a previous driver

    def add(self, intervals: list[float]) -> None:
        self.window.extend(intervals)
        self.steps += len(intervals)

    def median(self) -> float:
        return statistics.median(self.window) if self.window else self.carried


@dataclass(frozen=True)
class _Window:
    """The group's totals when a throughput window began (see `Progress`)."""

    at: float
    samples: int
    bytes_read: float
    data_wait_s: float


class _Reporter:
    """Turns workers' progress reports into the progress bar, the epoch history, checkpoint
    events and the job's status (`JobStatus`).

    Besides progress, the status holds what a scheduler needs to model the job: the step time
    per configuration run on (`observations`; `max_workers_seen` counts a configuration once its
    step time is measured, so that a model fitted to them is not trusted on a size it has not yet
    seen), the batch size and the gradient noise. A resumed job keeps what its previous driver
    measured.
    """

    def __init__(self, folder: RunFolder, trainer: Learner, progress: ProgressSink | None, events: EventLog,
                 ray_address: str | None) -> None:
        self.events = events
        self.folder = folder
        before = folder.read_status() or JobStatus(folder.job_id, JobState.STARTING)
        self.step_times = {(o.nodes, o.workers, o.local_batch): _StepTimes(o) for o in before.observations}
        self.snapshot = JobStatus(folder.job_id, JobState.STARTING, total_steps=int(trainer.total_steps),
                                  driver_pid=os.getpid(), ray_address=ray_address, run_dir=str(folder.path),
                                  batch_size=trainer.batch_size, grad_sqr=before.grad_sqr, grad_var=before.grad_var)
        self._observed()
        self.progress = progress
        self.window: _Window | None = None   # where the throughput's current window began
        self.batch_size = trainer.batch_size
        self.first: tuple[float, int] | None = None   # (time, step) of the first step seen done
        self.last: tuple[float, int] | None = None
        self.last_written = 0.0
        self.loss_block = max(1, math.ceil(int(trainer.total_steps) / MAX_LOSS_POINTS))   # steps per point
        self.pending_losses: list[tuple[int, int, float]] = []
        self.points: list[dict] = []   # metric points for the sink, sent once per report (one transaction)
        self.write()

    def status(self, **change: object) -> None:
        """Change fields of the job's status (see `JobStatus`) and write it; a job not yet
        training shows its new state on the progress bar (e.g. waiting for resources)."""
        self.snapshot = replace(self.snapshot, **change)
        state = change.get("state")
        if self.progress and state is not None and state != JobState.RUNNING and not JobState(state).is_stopped:
            self.progress.phase(str(state))
        self.write()

    def phase(self, text: str) -> None:
        """Show what the job is doing before it trains."""
        if self.progress:
            self.progress.phase(text)

    def _observed(self) -> None:
        observations = tuple(Observation(nodes, workers, local_batch, float(f"{times.median():.6g}"), times.steps)
                             for (nodes, workers, local_batch), times in sorted(self.step_times.items()))
        self.snapshot = replace(self.snapshot, observations=observations,
                                max_workers_seen=max((workers for _, workers, _ in self.step_times), default=0))

    def _measurements(self, report: Progress) -> None:
        measured = [entry for entry in report.step_times if entry.intervals]
        for entry in measured:
            key = (entry.nodes, entry.workers, entry.local_batch)
            self.step_times.setdefault(key, _StepTimes()).add(entry.intervals)
        if measured:
            self._observed()
        if report.grad_noise is not None:
            grad_sqr, grad_var = report.grad_noise
            self.snapshot = replace(self.snapshot, grad_sqr=grad_sqr, grad_var=grad_var)

    def report(self, report: Progress) -> None:
        now = time.time()
        if self.window is None or report.samples < self.window.samples:
            self.window = _Window(now, report.samples, report.bytes_read, report.data_wait_s)
        elif now - self.window.at >= 1.0:
            elapsed = now - self.window.at
            rate = round((report.samples - self.window.samples) / elapsed, 1)
            io = {}
            if report.bytes_read:
                io = {"read_bytes_per_s": round((report.bytes_read - self.window.bytes_read) / elapsed, 1),
                      "data_wait_share": round(min(1.0, (report.data_wait_s - self.window.data_wait_s)
                                                   / (elapsed * max(1, self.snapshot.workers))), 4)}
            self.snapshot = replace(self.snapshot, samples_per_s=rate, **io)
            for name, value in {"samples_per_s": rate, **io}.items():
                self.points.append({"name": name, "step": report.step, "epoch": report.epoch, "value": value,
                                    "t": now})
            self.window = _Window(now, report.samples, report.bytes_read, report.data_wait_s)
        self.snapshot = replace(self.snapshot, step=report.step, epoch=report.epoch,
                                step_ms=report.step_ms or self.snapshot.step_ms,
                                read_bytes=report.bytes_read or self.snapshot.read_bytes)
        self._measurements(report)
        for checkpoint in report.checkpoints:
            if checkpoint.error:
                self._checkpoint_failed(checkpoint)
                continue
            self.events.add(Event("checkpoint", checkpoint.step, self.snapshot.workers,
                                  self.snapshot.generation,
                                  round(checkpoint.snapshot_s + checkpoint.write_s, 4),
                                  detail={"bytes": checkpoint.bytes, "path": checkpoint.path,
                                          "sha256": checkpoint.sha256,
                                          "snapshot_s": round(checkpoint.snapshot_s, 4)}))
        if report.step > 0:
            self.last = (report.last_step_at, report.step)
            if self.first is None or report.step < self.first[1]:
                self.first = self.last
        if self.progress:
            self.progress.advance(report.step, report.loss, self.snapshot.workers)
        self._record_losses(report.losses, now)
        for record in report.epochs:
            scalars = scalar_metrics(record.metrics)
            self.folder.append_history({"epoch": record.epoch, "step": record.step, "t": now, **scalars})
            self.points += [{"name": name, "step": record.step, "epoch": record.epoch, "value": value,
                             "t": now} for name, value in scalars.items()]
            shown = "  ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(record.metrics).items())
            self.folder.log(f"epoch {record.epoch} (step {record.step}): {shown}")
            if self.progress:
                self.progress.epoch(record.epoch, record.metrics)
        self._send_points()
        if now - self.last_written >= 0.5:
            self.write()

    def _checkpoint_failed(self, checkpoint: CheckpointInfo) -> None:
        """A periodic checkpoint could not be written (full or read-only disk): training goes on, and
        the user is told where, why, and that the older checkpoints stay."""
        message = f"{checkpoint.error}; training goes on, earlier checkpoints are kept"
        self.events.add(Event("checkpoint_failed", checkpoint.step, self.snapshot.workers, self.snapshot.generation,
                              detail={"message": message, "path": checkpoint.path, "bytes": checkpoint.bytes}))
        self.folder.log(f"warning: {message}")
        self.warn(message)

    def _send_points(self) -> None:
        if self.points and self.events.sink is not None:
            self.events.sink.metrics(self.points)
        self.points = []

    def _record_losses(self, losses: Sequence[tuple[int, int, float]], now: float, final: bool = False) -> None:
        """Write the training loss: a point per `loss_block` steps (their mean), closing a block
        early at an epoch's end and when the job ends (`final`)."""
        for step, epoch, loss in losses:
            if self.pending_losses and self.pending_losses[-1][1] != epoch:
                self._write_losses(now)
            self.pending_losses.append((step, epoch, loss))
            if len(self.pending_losses) >= self.loss_block:
                self._write_losses(now)
        if final and self.pending_losses:
            self._write_losses(now)

    def _write_losses(self, now: float) -> None:
        step, epoch, _ = self.pending_losses[-1]
        mean = sum(loss for _, _, loss in self.pending_losses) / len(self.pending_losses)
        self.folder.append_loss({"step": step, "epoch": epoch, "loss": mean, "steps": len(self.pending_losses),
                                 "t": now})
        self.points.append({"name": "train_loss", "step": step, "epoch": epoch, "value": mean, "t": now})
        self.pending_losses = []

    def finish(self) -> None:
        """The job ended: write the training loss still held back."""
        self._record_losses([], time.time(), final=True)
        self._send_points()

    def warn(self, message: str) -> None:
        if self.progress:
            self.progress.warn(message)

    def samples_per_s(self) -> float | None:
        """Samples trained per second between the first and the last step seen completed."""
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        return round((self.last[1] - self.first[1]) * self.batch_size / (self.last[0] - self.first[0]), 1)

    def write(self) -> None:
        self.last_written = time.time()
        self.folder.write_status(replace(self.snapshot, updated=self.last_written))


def _execute(spec: JobSpec, trainer: Learner, folder: RunFolder, progress: ProgressSink | None,
             options: RunOptions, started: float, resume: bool) -> JobResult:
    """Run the job whose run folder is `folder`; `started` is when it was asked for (wall clock,
    epoch seconds): its final event's duration and the result's wall time count from then."""
    job_id = folder.job_id
    events = EventLog(folder, options.sink)
    reporter = _Reporter(folder, trainer, progress, events, options.ray_address)
    checkpoint_url = checkpoint_place(spec, folder)
    control = options.control or JobControl()
    if options.ray_address is None:   # a driver actor is reached through Ray, never through files
        control.follow(folder)
    if progress:
        progress.start(int(trainer.total_steps), trainer.steps_per_epoch)
    shared = handed_over(trainer.data)   # the rows every worker of the job is given, if they are held in memory
    try:
        if options.on_ray or not runs_in_process(spec, options.chaos):
            outcome = _on_ray(spec, events, checkpoint_url, reporter, options, control, resume, shared)
        else:
            outcome = _in_process(spec, events, checkpoint_url, reporter, options, control, resume, shared)
    except UserError as exc:
        reporter.status(state=JobState.FAILED, message=exc.line())
        raise
    except (KeyboardInterrupt, JobInterrupted):
        step = reporter.snapshot.step
        message = f"job {job_id} interrupted at step {step}; {resume_hint(spec, folder)}"
        events.add(Event(JobState.INTERRUPTED, step, reporter.snapshot.workers, reporter.snapshot.generation))
        reporter.status(state=JobState.INTERRUPTED, message=message)
        raise JobInterrupted(message) from None
    reporter.finish()
    trainer.load_state_dict(outcome.state)
    model_path, message = None, None
    if outcome.status is JobState.SUCCEEDED:
        for event in selection_events(trainer, reporter.snapshot.workers, reporter.snapshot.generation):
            events.add(event)
        try:
            model_path = str(trainer.save(folder.model_dir, spec.model_dump(mode="json")))
        except WriteFailed as exc:   # a full or read-only disk: the job fails, its trained state kept if it can be
            outcome = replace(outcome, status=JobState.FAILED)
            message = f"{exc}; {_keep_state(outcome.state, trainer.step, folder)}"
            folder.log(f"error: {message}")
    elif outcome.status is JobState.CANCELLED:
        message = f"cancelled at step {trainer.step}"
    else:
        message = outcome.message
        kept = _keep_state(outcome.state, trainer.step, folder)
        if outcome.traceback:
            folder.log(outcome.traceback.rstrip())
            message = f"{message}; {kept}, the traceback in {folder.log_file}"
    metrics = outcome.metrics or {}
    status = outcome.status
    events.add(Event(status, trainer.step, reporter.snapshot.workers, reporter.snapshot.generation,
                     round(time.time() - started, 3)))
    result = JobResult(job_id=job_id, status=status, epochs=trainer.epoch, steps=trainer.step,
                       data_fingerprint=trainer.data.fingerprint(),
                       metrics=scalar_metrics(metrics), model_path=model_path,
                       wall_s=round(time.time() - started, 3), run_dir=str(folder.path), message=message,
                       details={k: v for k, v in metrics.items() if isinstance(v, list)},
                       events=len(events.events), samples_per_s=reporter.samples_per_s(),
                       step_ms=reporter.snapshot.step_ms,
                       model_bytes=_folder_bytes(Path(model_path)) if model_path else None)
    folder.write_result(result.to_dict())
    reporter.status(state=status, step=trainer.step, epoch=trainer.epoch)
    return result


def _folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (a saved model), in bytes."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _keep_state(state: dict, step: int, folder: RunFolder) -> str:
    """Keep the state of a job that failed at `step` in its run folder; says where, or why it could not."""
    kept = folder.checkpoints / f"last-good-step-{step}.pt"
    payload = io.BytesIO()
    torch.save(state, payload)   # to memory first: torch.save to a full disk raises a RuntimeError, file left open
    try:
        folder.checkpoints.mkdir(exist_ok=True)
        kept.write_bytes(payload.getvalue())
    except OSError as exc:
        kept.unlink(missing_ok=True)   # half a state is no state, and it holds the space a full disk lacks
        return f"the state of step {step} could not be kept either ({exc.strerror or type(exc).__name__} " \
               f"in {folder.checkpoints})"
    return f"the state of step {step} is kept in {kept}"


def checkpoint_place(spec: JobSpec, folder: RunFolder) -> str:
    """Where the job's durable checkpoints go: its spec's checkpoint.dir, else its run folder's."""
    return spec.checkpoint.dir or str(folder.checkpoints)


def _last_checkpoint(spec: JobSpec, folder: RunFolder) -> int | None:
    """The step of the job's newest complete checkpoint, or None when it kept none."""
    with CheckpointStore(checkpoint_place(spec, folder)) as store:
        kept = store.list()
    return kept[-1].step if kept else None


def _how_to_keep(spec: JobSpec) -> str:
    """How to make a job keep its progress, when its spec asks for no checkpoints (else "")."""
    if spec.checkpoint.every_steps is None and spec.checkpoint.every_seconds is None:
        return " (its spec has no checkpoint section: add e.g. `checkpoint: {every_steps: 100}` to keep progress)"
    return ""


def resume_hint(spec: JobSpec, folder: RunFolder) -> str:
    """What `elastrain resume` will do with an interrupted job, truthfully: continue from its
    newest checkpoint, or start again at step 0 (and how to keep checkpoints next time)."""
    job_id, step = folder.job_id, _last_checkpoint(spec, folder)
    if step is not None:
        return f"`elastrain resume {job_id}` continues it from its last checkpoint (step {step})"
    return f"no checkpoint was kept, so `elastrain resume {job_id}` would start again at step 0{_how_to_keep(spec)}"


def _in_process(spec: JobSpec, events: EventLog, checkpoint_url: str, reporter: _Reporter, options: RunOptions,
                control: JobControl, resume: bool, data: DataSource | None) -> Outcome:
    """Run the job's single worker in this process, reporting as the elastic controller does.

    An interrupt (Ctrl-C) stops the worker after its current step before it propagates, so that
    no training thread outlives the job.
    """
    worker = Worker(spec.model_dump(mode="json"), options.extra_paths, checkpoint_url, options.trace_dir,
                    options.gate, data)
    if resume:
        loaded = worker.load_checkpoint()
        for message in loaded["skipped"]:
            events.add(Event("checkpoint_skipped", 0, 1, 0, detail={"message": message}))
            reporter.warn(message)
        events.add(Event("resume", loaded["step"] or 0, 1, 0, detail={"from_checkpoint": loaded["step"]}))
    events.add(Event("start", worker.learner.step, 1, 0))
    reporter.status(state=JobState.RUNNING, workers=1)
    ended: list[RunResult] = []
    thread = threading.Thread(target=_run_worker, args=(worker, ended), daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=0.05)
            reporter.report(worker.progress())
            if control.cancel_requested() or control.interrupt_requested():
                worker.request_pause()
    except KeyboardInterrupt:
        worker.request_pause()
        thread.join()
        raise
    finally:
        worker.shutdown()
    reporter.report(worker.progress())
    result = ended[0]
    if result.status is RunStatus.PAUSED and control.interrupt_requested():
        raise JobInterrupted(f"stopped at step {worker.learner.step} for the driver's shutdown")
    if result.status is RunStatus.PAUSED:   # otherwise only a cancel or the gate pauses a job of one worker
        return Outcome(JobState.CANCELLED, worker.learner.state_dict())
    if result.status.failed:
        return Outcome(JobState.FAILED, worker.learner.state_dict(), message=result.message,
                       traceback=result.traceback)
    return Outcome(JobState.SUCCEEDED, worker.learner.state_dict(), metrics=result.metrics)


def _run_worker(worker: Worker, ended: list[RunResult]) -> None:
    """Run `worker` to its end, its result appended to `ended`: an error raised outside its steps
    (finishing a checkpoint write, say) becomes the result ERROR rather than dying with the thread."""
    try:
        ended.append(worker.run())
    except Exception as exc:
        ended.append(RunResult(RunStatus.ERROR, worker.learner.step, message=first_line(exc),
                               traceback=traceback.format_exc()))


def _on_ray(spec: JobSpec, events: EventLog, checkpoint_url: str, reporter: _Reporter,
            options: RunOptions, control: JobControl, resume: bool, data: DataSource | None) -> Outcome:
    import ray

    started_here = connect_ray(os.environ.get("RAY_ADDRESS"))
    workers = options.workers or spec.resources.workers.max
    reporter.phase(f"starting {workers} worker{'s' if workers > 1 else ''}")
    crowded = oversubscribed(spec.resources.workers.max, [node for node in ray.nodes() if node["Alive"]])
    if crowded:
        reporter.warn(crowded)
        reporter.folder.log(f"warning: {crowded}")
    try:
        controller = ElasticController(spec, events, checkpoint_url, reporter.snapshot.total_steps,
                                       resume=resume, chaos=options.chaos,
                                       on_progress=reporter.report, on_status=reporter.status,
                                       on_warning=reporter.warn,
                                       control=control, extra_paths=options.extra_paths,
                                       trace_dir=options.trace_dir, workers=options.workers, pool=options.pool,
                                       gate=options.gate, data=data)
        return controller.run()
    finally:
        if started_here:
            ray.shutdown()


def selection_events(trainer: Learner, workers: int, generation: int) -> list[Event]:
    """What early stopping and train.keep_best decided in a finished job, as events: `early_stopped`
    (the metric, its best value and epoch, the patience) and `best_kept` (the epoch, step and
    value of the model saved)."""
    found = []
    stopping = trainer.spec.train.early_stopping
    if trainer.stopped_early and trainer.watch is not None and stopping is not None:
        found.append(Event("early_stopped", trainer.step, workers, generation,
                           detail={"metric": trainer.stop_metric, "best": round(trainer.watch.value, 6),
                                   "best_epoch": trainer.watch.epoch, "patience": stopping.patience}))
    if trainer.best is not None:
        found.append(Event("best_kept", trainer.best.step, workers, generation,
                           detail={"metric": trainer.best_metric, "value": round(trainer.best.value, 6),
                                   "epoch": trainer.best.epoch}))
    return found


def oversubscribed(max_workers: int, nodes: list[dict]) -> str | None:
    """A warning when a job's workers would outnumber the cores of the one machine they share
    (`nodes`: Ray's live nodes), else None. Each worker trains with its own threads: on 2 cores,
    3 workers took 31 ms per step where one took 8.9 ms (issue 13). On a cluster of several
    nodes the workers spread, and nothing is said."""
    cores = os.cpu_count() or 1
    if len(nodes) != 1 or max_workers <= cores:
        return None
    return (f"up to {max_workers} workers on this machine's {cores} cores: they will slow each other down "
            f"(every step waits for the slowest); set resources.workers.max to at most {cores}, or join a "
            "cluster with RAY_ADDRESS")


def scalar_metrics(metrics: dict) -> dict:
    """The single-number metrics, named `val_<metric>`."""
    return {f"val_{name}": value for name, value in metrics.items() if isinstance(value, float)}
