"""One worker of an elastic job: a Ray actor holding a full replica of the training state.

The controller drives it: `form` joins a generation of the group, `sync` makes every member's
state equal to one survivor's, `run` trains in lock step until done, paused or broken. Calls
that must answer while `run` is busy (`request_pause`, `progress`, `die`) run on other threads
of the same actor.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path

import torch

from elastrain.data.rows import DataSource
from elastrain.elastic.checkpoints import CheckpointStore
from elastrain.elastic.collective import GroupCollective, bind_to_address
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.preemption import Notice, NoticeWatcher
from elastrain.elastic.reports import EpochRecord, Progress, RunResult, RunStatus, StepIntervals
from elastrain.errors import TrainingDiverged, UserError
from elastrain.spec import JobSpec
from elastrain.train.breakdown import StepBreakdown
from elastrain.train.learner import Learner, PeerLost, StepReport, build_learner
from elastrain.train.loop import fit

# Steps of a formation whose times are not measured: the first steps after the group (re)forms
# are slow (connections, caches), and would bias the step time the scheduler models.
WARMUP_STEPS = 3
# Intervals a worker keeps until they are collected (only rank 0's are: the others drop their oldest).
PENDING_INTERVALS = 1024


class CheckpointPolicy:
    """Decides after each step whether to snapshot the state (every N steps and/or T seconds)."""

    def __init__(self, every_steps: int | None, every_seconds: float | None) -> None:
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.last_at = time.monotonic()

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due after `step` (and, if so, restart the clock)."""
        by_steps = self.every_steps is not None and step % self.every_steps == 0
        by_time = self.every_seconds is not None and time.monotonic() - self.last_at >= self.every_seconds
        if by_steps or by_time:
            self.last_at = time.monotonic()
            return True
        return False


class StepTimer:
    """Seconds between consecutive completed steps of each formation of the group, by
    configuration (nodes, workers, local batch), skipping a formation's first `WARMUP_STEPS`
    steps and any interval that contains an evaluation (an epoch's end)."""

    def __init__(self, local_batch: float) -> None:
        self.pending: dict[tuple[int, int, float], deque[float]] = {}
        self.restart(1, 1, local_batch)

    def restart(self, nodes: int, workers: int, local_batch: float) -> None:
        """A new formation begins on this configuration: its first steps are warm-up again."""
        self.config = (nodes, workers, local_batch)
        self.steps = 0
        self.last_at: float | None = None
        self.evaluated = False

    def step_done(self, epoch_done: bool) -> None:
        """A step completed now; `epoch_done`: an evaluation follows it before the next step."""
        now = time.perf_counter()
        self.steps += 1
        if self.last_at is not None and not self.evaluated and self.steps > WARMUP_STEPS:
            self.pending.setdefault(self.config, deque(maxlen=PENDING_INTERVALS)).append(now - self.last_at)
        self.last_at, self.evaluated = now, epoch_done

    def drain(self) -> tuple[StepIntervals, ...]:
        """The intervals measured since the last call, one entry per configuration."""
        drained, self.pending = self.pending, {}
        return tuple(StepIntervals(nodes, workers, local_batch, tuple(intervals))
                     for (nodes, workers, local_batch), intervals in drained.items())


class Worker:
    """A replica of the job's learner, driven by the controller.

    Args:
        spec: the job spec (as a JSON-able dict).
        extra_paths: folders to import user models from (the spec's folder).
        checkpoint_url: where durable checkpoints go.
        trace_dir: if set, every completed step's sample shard is appended there (a test hook).
        gate: asked on rank 0 after every epoch's evaluation whether the job stops there (see
            `EpochGate`); the group then stops after its next step and the job ends cancelled.
        data: the job's data as the driver opened it, when it hands it over (`handed_over`);
            None: the worker opens the spec's source itself.
    """

    def __init__(self, spec: dict, extra_paths: list[str], checkpoint_url: str, trace_dir: str | None,
                 gate: EpochGate | None = None, data: DataSource | None = None) -> None:
        self._load(spec, extra_paths, checkpoint_url, trace_dir, gate, data)

    def reload(self, spec: dict, extra_paths: list[str], checkpoint_url: str, trace_dir: str | None,
               gate: EpochGate | None = None, data: DataSource | None = None) -> dict:
        """Leave the job this worker trained and load another (a `WorkerPool` worker); its `info`."""
        self.shutdown()
        self._load(spec, extra_paths, checkpoint_url, trace_dir, gate, data)
        return self.info()

    def _load(self, spec: dict, extra_paths: list[str], checkpoint_url: str, trace_dir: str | None,
              gate: EpochGate | None, data: DataSource | None) -> None:
        sys.path[:0] = [p for p in extra_paths if p not in sys.path]
        self.gate = gate
        self.gate_closed = False   # the gate said stop: the group pauses and the job ends
        self.spec = JobSpec.model_validate(spec)
        self.collective = GroupCollective()
        if not self.spec.resources.on_gpu:
            import ray

            bind_to_address(ray.util.get_node_ip_address())
        self.learner = build_learner(self.spec, data, collective=self.collective, device=worker_device(self.spec))
        self.checkpoint_url = checkpoint_url
        self.store: CheckpointStore | None = None
        self.policy = CheckpointPolicy(self.spec.checkpoint.every_steps, self.spec.checkpoint.every_seconds)
        self.trace = Path(trace_dir) / f"worker-{os.getpid()}.jsonl" if trace_dir else None
        self.pause = threading.Event()
        self.pause_after: int | None = None   # the group stops after this step (see request_pause)
        self.lock = threading.Lock()
        self.last_loss = float("nan")
        self.last_step_at = time.time()
        self.samples_done = 0
        self.bytes_read = 0.0     # by the group, as each step's all-reduce summed it
        self.data_wait_s = 0.0
        self.epochs: list[EpochRecord] = []
        self.losses: list[tuple[int, int, float]] = []   # (step, epoch from 1, training loss) since the last report
        self.timer = StepTimer(float(self.learner.batch_size))
        self.first_step_at: float | None = None   # wall time of the current formation's first step
        self.noise: tuple[float, float] | None = self.learner.gradient_noise()
        self.notice: Notice | None = None    # this node's preemption notice, once seen
        self.notice_reported = False
        notices = self.spec.resources.preemption_notices
        self.watcher = None if notices is None else NoticeWatcher(notices.source, notices.url, notices.poll_s,
                                                                  self._on_notice)

    def info(self) -> dict:
        """Where this worker runs and how far its replica is."""
        import ray

        return {"pid": os.getpid(), "host": ray.util.get_node_ip_address(), "step": self.learner.step,
                "gpus": torch.cuda.device_count(), "node_id": ray.get_runtime_context().get_node_id()}

    def listen(self) -> int:
        """Open the rendezvous of the next generation, which this worker will lead; returns its port."""
        import ray

        return self.collective.listen(ray.util.get_node_ip_address(), self.spec.resources.hang_timeout_s)

    def form(self, generation: int, rank: int, world_size: int, master: str, port: int, backend: str,
             nodes: int = 1) -> None:
        """Join generation `generation` of the group as `rank` of `world_size` (spread over `nodes` nodes)."""
        self.collective.form(generation, rank, world_size, master, port, backend,
                             self.spec.resources.hang_timeout_s)
        with self.lock:
            self.timer.restart(nodes, world_size, self.learner.batch_size / world_size)
            self.learner.breakdown = StepBreakdown()
            self.first_step_at = None

    def sync(self, source: int) -> int:
        """Make this replica equal to the one of rank `source`; returns the step it holds."""
        state = self.learner.state_dict() if self.collective.rank == source else None
        state = self.collective.broadcast_state(state, source)
        if self.collective.rank != source:
            self.learner.load_state_dict(state)
        with self.lock:
            self.noise = self.learner.gradient_noise()
        return self.learner.step

    def load_checkpoint(self) -> dict:
        """Load the newest valid durable checkpoint; returns its step and the broken ones skipped."""
        loaded = CheckpointStore(self.checkpoint_url).latest()
        if loaded is None:
            return {"step": None, "skipped": []}
        self.learner.load_state_dict(loaded.state)
        with self.lock:
            self.noise = self.learner.gradient_noise()
        return {"step": self.learner.step, "skipped": list(loaded.skipped)}

    def run(self, pause_after: int | None = None) -> RunResult:
        """Train in lock step with the group until the job is done, the group pauses (asked to, or
        after step `pause_after`), or a peer is lost (the step in flight is then discarded).

        Returns:
            how it ended (see `RunStatus`): DONE with the final metrics, PAUSED (with `stopped`
            when the epoch gate closed, `preempted` with this node's notice), BROKEN with the
            error, DIVERGED or ERROR with a message (and the traceback): the same inputs would
            fail again, so the job must fail rather than retry.
        """
        self.pause_after = pause_after
        try:
            outcome = fit(self.learner, on_step=self._on_step, on_epoch=self._on_epoch,
                          pause_requested=self._pause_due)
        except TrainingDiverged as exc:
            return RunResult(RunStatus.DIVERGED, self.learner.step, message=exc.line())
        except PeerLost as exc:
            return RunResult(RunStatus.BROKEN, self.learner.step, error=str(exc))
        except UserError as exc:   # the data broke (a shard vanished): its own line, the same on a retry
            return RunResult(RunStatus.ERROR, self.learner.step, message=exc.line())
        except Exception as exc:
            return RunResult(RunStatus.ERROR, self.learner.step, message=step_error_line(exc, self.learner),
                             traceback=traceback.format_exc())
        if outcome.status == "paused":
            self.pause.clear()
            self.pause_after = None
            preempted = None
            if self.notice is not None and not self.notice_reported:
                self.notice_reported = True
                preempted = self.notice
            return RunResult(RunStatus.PAUSED, self.learner.step, stopped=self.gate_closed, preempted=preempted)
        if self.store:
            self.store.wait()
        return RunResult(RunStatus.DONE, self.learner.step, metrics=outcome.metrics)

    def _on_step(self, report: StepReport) -> None:
        with self.lock:
            self.last_loss, self.last_step_at = report.loss, time.time()
            if self.collective.rank == 0:   # the controller reads progress from rank 0 only
                self.losses.append((report.step, report.epoch + 1, report.loss))
            if self.first_step_at is None:
                self.first_step_at = self.last_step_at
            self.samples_done += report.samples
            self.bytes_read += report.bytes_read
            self.data_wait_s += report.data_wait_s
            self.timer.step_done(report.epoch_done)
            self.noise = self.learner.gradient_noise()
        if self.trace:
            self._trace(report)
        if self.collective.rank == 0 and self.policy.due(report.step):
            if self.store is None:
                self.store = CheckpointStore(self.checkpoint_url, keep=self.spec.checkpoint.keep)
            self.store.save_async(report.step, self.learner.state_dict(),
                                  meta={"generation": self.collective.generation,
                                        "workers": self.collective.world_size})

    def _on_epoch(self, epoch: int, metrics: dict) -> None:
        if self.collective.rank == 0:
            with self.lock:
                self.epochs.append(EpochRecord(epoch, self.learner.step, metrics))
            if self.gate is not None and not self.learner.done and self.gate(epoch, metrics):
                self.gate_closed = True
                self.request_pause()

    def _trace(self, report: StepReport) -> None:
        learner = self.learner
        start = (learner.n_train if report.epoch_done else learner.position) - report.samples
        batch, mine = learner.data.batch_ids(self.spec.train.seed, report.epoch, start, learner.batch_size,
                                             self.collective.rank, self.collective.world_size)
        record = {"generation": self.collective.generation, "step": report.step, "epoch": report.epoch,
                  "rank": self.collective.rank, "world_size": self.collective.world_size, "indices": mine.tolist(),
                  "batch": batch.tolist()}
        with self.trace.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def request_pause(self, after_step: int | None = None) -> None:
        """Ask the group to stop after step `after_step`, or after its next step (every member
        stops after the same one)."""
        if after_step is None:
            self.pause.set()
        else:
            self.pause_after = after_step

    def _pause_due(self) -> bool:
        after = self.pause_after
        return (self.pause.is_set() or (after is not None and self.learner.step + 1 >= after)
                or (self.notice is not None and not self.notice_reported))

    def _on_notice(self, notice: Notice) -> None:
        """This node will be taken: the group stops after its next step, and `run` reports the
        notice so that the controller lets this worker go."""
        self.notice = notice

    def progress(self) -> Progress:
        """Where this replica is, and the losses, evaluations, checkpoints and step times since
        the last call (see `Progress`)."""
        checkpoints = tuple(replace(info, path=str(info.path)) for info in self.store.drain_completed()) \
            if self.store else ()
        with self.lock:
            epochs, self.epochs = self.epochs, []
            losses, self.losses = self.losses, []
            return Progress(step=self.learner.step, epoch=self.learner.epoch, loss=self.last_loss,
                            last_step_at=self.last_step_at, samples=self.samples_done, losses=tuple(losses),
                            epochs=tuple(epochs), checkpoints=checkpoints, step_times=self.timer.drain(),
                            grad_noise=self.noise, step_ms=self.learner.breakdown.as_ms(),
                            first_step_at=self.first_step_at, bytes_read=self.bytes_read,
                            data_wait_s=self.data_wait_s)

    def state(self) -> bytes:
        """The full training state, serialized with torch.save (load with weights_only=True)."""
        buffer = io.BytesIO()
        torch.save(self.learner.state_dict(), buffer)
        return buffer.getvalue()

    def shutdown(self) -> None:
        """Finish pending checkpoint writes and leave the group."""
        if self.watcher:
            self.watcher.stop()
        if self.store:
            self.store.close()
        self.collective.leave()

    def die(self) -> None:
        """SIGKILL this worker's own process (fault injection)."""
        os.kill(os.getpid(), signal.SIGKILL)


def worker_device(spec: JobSpec) -> str:
    """Where this process trains the job: its first visible CUDA device when the job trains on
    GPUs (Ray makes the GPUs it gave a worker the only visible ones), else the CPU.

    Raises:
        UserError: the job asks for a GPU and this process sees none.
    """
    if not spec.resources.on_gpu:
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"the job trains on a GPU (resources.gpus_per_worker {spec.resources.gpus_per_worker:g}), "
                        f"but this process sees no CUDA device (torch {torch.__version__})", where="resources",
                        fix="run it where a GPU and a CUDA build of PyTorch are, or set resources.device: cpu")
    return f"cuda:{torch.cuda.current_device()}"


def step_error_line(exc: BaseException, trainer: Learner) -> str:
    """One line naming the exception the training code raised and where: the step (1-based) it
    was taking, or the evaluation after the step that ended an epoch."""
    what = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(what) > 300:
        what = what[:297] + "..."
    where = (f"the evaluation after step {trainer.step}" if trainer.eval_pending
             else f"step {trainer.step + 1} (epoch {trainer.epoch + 1})")
    return f"the training code raised {what} in {where}"
