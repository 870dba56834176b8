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
from pathlib import Path

import torch

from elastrain.data import prepare_dataset
from elastrain.data.sampler import global_batch, shard
from elastrain.elastic.checkpoints import CheckpointStore
from elastrain.elastic.collective import GroupCollective, free_port
from elastrain.errors import TrainingDiverged
from elastrain.spec import JobSpec
from elastrain.train.loop import fit
from elastrain.train.trainer import StepReport, Trainer


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


class Worker:
    """A replica of the job's trainer, driven by the controller.

    Args:
        spec: the job spec (as a JSON-able dict).
        extra_paths: folders to import user models from (the spec's folder).
        checkpoint_url: where durable checkpoints go.
        trace_dir: if set, every completed step's sample shard is appended there (a test hook).
    """

    def __init__(self, spec: dict, extra_paths: list[str], checkpoint_url: str, trace_dir: str | None) -> None:
        sys.path[:0] = [p for p in extra_paths if p not in sys.path]
        self.spec = JobSpec.model_validate(spec)
        self.collective = GroupCollective()
        self.trainer = Trainer(self.spec, prepare_dataset(self.spec), self.collective)
        self.checkpoint_url = checkpoint_url
        self.store: CheckpointStore | None = None
        self.policy = CheckpointPolicy(self.spec.checkpoint.every_steps, self.spec.checkpoint.every_seconds)
        self.trace = Path(trace_dir) / f"worker-{os.getpid()}.jsonl" if trace_dir else None
        self.pause = threading.Event()
        self.lock = threading.Lock()
        self.last_loss = float("nan")
        self.last_step_at = time.time()
        self.samples_done = 0
        self.epochs: list[dict] = []

    def info(self) -> dict:
        """Where this worker runs and how far its replica is."""
        import ray

        return {"pid": os.getpid(), "host": ray.util.get_node_ip_address(), "step": self.trainer.step,
                "gpus": torch.cuda.device_count()}

    def free_port(self) -> int:
        """A free port on this worker's host, for a rendezvous it leads."""
        return free_port()

    def form(self, generation: int, rank: int, world_size: int, master: str, port: int, backend: str) -> None:
        """Join generation `generation` of the group as `rank` of `world_size`."""
        self.collective.form(generation, rank, world_size, master, port, backend)

    def sync(self, source: int) -> int:
        """Make this replica equal to the one of rank `source`; returns the step it holds."""
        state = self.trainer.state_dict() if self.collective.rank == source else None
        state = self.collective.broadcast_state(state, source)
        if self.collective.rank != source:
            self.trainer.load_state_dict(state)
        return self.trainer.step

    def load_checkpoint(self) -> dict:
        """Load the newest valid durable checkpoint; returns its step and the broken ones skipped."""
        loaded = CheckpointStore(self.checkpoint_url).latest()
        if loaded is None:
            return {"step": None, "skipped": []}
        self.trainer.load_state_dict(loaded.state)
        return {"step": self.trainer.step, "skipped": list(loaded.skipped)}

    def run(self) -> dict:
        """Train in lock step with the group until the job is done, the group pauses, or a peer is lost.

        Returns:
            {"status": "done", "metrics"}, {"status": "paused"}, {"status": "broken", "error"}
            (the step in flight was discarded) or {"status": "diverged", "message"}; with "step".
        """
        try:
            outcome = fit(self.trainer, on_step=self._on_step, on_epoch=self._on_epoch,
                          pause_requested=self.pause.is_set)
        except TrainingDiverged as exc:
            return {"status": "diverged", "message": exc.line(), "step": self.trainer.step}
        except Exception as exc:   # a lost peer surfaces as whatever the backend raises
            return {"status": "broken", "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                    "step": self.trainer.step}
        if outcome.status == "paused":
            self.pause.clear()
            return {"status": "paused", "step": self.trainer.step}
        if self.store:
            self.store.wait()
        return {"status": "done", "metrics": outcome.metrics, "step": self.trainer.step}

    def _on_step(self, report: StepReport) -> None:
        with self.lock:
            self.last_loss, self.last_step_at = report.loss, time.time()
            self.samples_done += report.samples
        if self.trace:
            self._trace(report)
        if self.collective.rank == 0 and self.policy.due(report.step):
            if self.store is None:
                self.store = CheckpointStore(self.checkpoint_url, keep=self.spec.checkpoint.keep)
            self.store.save_async(report.step, self.trainer.state_dict(),
                                  meta={"generation": self.collective.generation,
                                        "workers": self.collective.world_size})

    def _on_epoch(self, epoch: int, metrics: dict) -> None:
        if self.collective.rank == 0:
            with self.lock:
                self.epochs.append({"epoch": epoch, "step": self.trainer.step, "metrics": metrics})

    def _trace(self, report: StepReport) -> None:
        trainer = self.trainer
        start = (trainer.n_train if report.epoch_done else trainer.position) - report.samples
        batch = global_batch(trainer.n_train, self.spec.train.seed, report.epoch, start, trainer.batch_size)
        mine = shard(batch, self.collective.rank, self.collective.world_size)
        record = {"generation": self.collective.generation, "step": report.step, "epoch": report.epoch,
                  "rank": self.collective.rank, "world_size": self.collective.world_size, "indices": mine.tolist(),
                  "batch": batch.tolist()}
        with self.trace.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def request_pause(self) -> None:
        """Ask the group to stop after its next step (every member stops after the same one)."""
        self.pause.set()

    def progress(self) -> dict:
        """Step, epoch, loss and samples so far; epoch metrics and checkpoints since the last call."""
        checkpoints = [vars(info) | {"path": str(info.path)} for info in self.store.drain_completed()] \
            if self.store else []
        with self.lock:
            epochs, self.epochs = self.epochs, []
            return {"step": self.trainer.step, "epoch": self.trainer.epoch, "loss": self.last_loss,
                    "last_step_at": self.last_step_at, "samples": self.samples_done, "epochs": epochs,
                    "checkpoints": checkpoints}

    def state(self) -> bytes:
        """The full training state, serialized with torch.save (load with weights_only=True)."""
        buffer = io.BytesIO()
        torch.save(self.trainer.state_dict(), buffer)
        return buffer.getvalue()

    def shutdown(self) -> None:
        """Finish pending checkpoint writes and leave the group."""
        if self.store:
            self.store.close()
        self.collective.leave()

    def die(self) -> None:
        """SIGKILL this worker's own process (fault injection)."""
        os.kill(os.getpid(), signal.SIGKILL)
