"""The learner seam: what a worker trains, behind one protocol, chosen by the model's kind.

The elastic engine (worker, controller, checkpoints) drives any `Learner` the same way: lock-step
steps on global batches, an evaluation at each epoch's end, the state as a dict of tensors and
plain values (checkpointed, broadcast to a new member, resumed on any world size) and, at the end,
the model saved. The torch trainer (`elastrain.train.trainer.Trainer`) learns every built-in kind
and `python:` models; a plugin registers a learner for a kind of its own
(`elastrain.plugins.register_learner`), usually by subclassing `LearnerBase`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from elastrain.data.rows import DataSource, Share, open_source
from elastrain.errors import UserError
from elastrain.plugins import LEARNERS, import_plugins
from elastrain.spec import JobSpec
from elastrain.spec.models import TREE_KINDS
from elastrain.train.breakdown import StepBreakdown
from elastrain.train.selection import BestEpoch, judge

DEFAULT_BATCH_SIZE = 32


class PeerLost(RuntimeError):
    """A collective operation failed because a peer died, hung past the timeout or left: the
    step in flight is discarded and the group must re-form (not an error of the training code)."""


class Collective(Protocol):
    """How workers add tensors together (torch.distributed in a worker group)."""

    rank: int
    world_size: int

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        """Replace `tensor` in place by its sum over all workers.

        Raises:
            PeerLost: a peer was lost.
        """


class LocalCollective:
    """The collective of a group of one worker."""

    rank = 0
    world_size = 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        """Nothing to add: this worker is the whole group."""


@dataclass(frozen=True)
class StepReport:
    """What a completed step did."""

    step: int          # steps completed, this one included
    epoch: int         # epoch the step belonged to
    loss: float        # mean loss over the global batch
    samples: int       # size of the global batch
    lr: float
    epoch_done: bool   # this step finished its epoch
    signal: float = 0.0   # the sum over the group of the `signal` each worker passed
    bytes_read: float = 0.0   # read from storage by the group since the previous step
    data_wait_s: float = 0.0  # summed over the group: how long members waited for rows since the previous step


@runtime_checkable
class Learner(Protocol):
    """One data-parallel replica of a job's learning state, stepped in lock step with its group.

    Every step is a collective over `collective` (every member takes the same step on its share
    of the same global batch); so is `evaluate`. Attributes give the job's progress (`step`
    completed, `epoch` from 0, `position` in the epoch's samples, `eval_pending` after a step that
    ended an epoch until its evaluation is recorded) and its size (`batch_size` the global batch,
    `n_train` rows, `steps_per_epoch`, `total_steps`).
    """

    spec: JobSpec
    data: DataSource
    collective: Collective
    step: int
    epoch: int
    position: int
    eval_pending: bool
    batch_size: int
    n_train: int
    steps_per_epoch: int
    total_steps: float
    breakdown: StepBreakdown
    best_metric: str | None        # what train.keep_best selects by, and its best evaluation so far
    best: BestEpoch | None
    stop_metric: str | None        # what early stopping watches, and its best evaluation so far
    watch: BestEpoch | None
    stopped_early: bool

    @property
    def done(self) -> bool:
        """Whether the job has taken all its steps (or stopped early)."""

    def check(self) -> None:
        """Fail before any worker starts if the model cannot take the data.

        Raises:
            UserError: what is wrong and what to change.
        """

    def train_step(self, signal: float = 0.0) -> StepReport:
        """Take one step on the next global batch; `signal` is summed over the group into the report.

        Raises:
            TrainingDiverged: the step would make the state non-finite; nothing changed.
            Exception: whatever the collective raises when a peer is lost; nothing changed, so
                the step can be taken again exactly.
        """

    def evaluate(self) -> dict:
        """Validation metrics of the current state (scalars by name; lists for per-class ones)."""

    def record_evaluation(self, metrics: dict) -> None:
        """Take in an evaluation of the current state (the epoch's evaluation is no longer pending)."""

    def finish(self, metrics: dict) -> dict:
        """The job's final metrics, given the last evaluation's (and the state it keeps)."""

    def gradient_noise(self) -> tuple[float, float] | None:
        """(|G|^2, variance of a mean gradient at `batch_size`) for the scheduler, or None."""

    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit, tensors on the CPU."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` of a learner of the same job."""

    def save(self, directory: Path, job: dict) -> Path:
        """Write the trained model to `directory` (with the job spec `job`); returns the folder.

        Raises:
            WriteFailed: the disk is full or read-only (nothing half-written is left).
        """


class LearnerBase:
    """What most learners share: progress through the training split by seeded global batches
    (`elastrain.data.sampler`), the batch size, the step count, and no model selection.

    Args:
        spec: the job.
        data: its rows.
        collective: how the group adds tensors (a group of one by default).

    Raises:
        UserError: train.batch_size larger than the training split.
    """

    def __init__(self, spec: JobSpec, data: DataSource, collective: Collective | None = None) -> None:
        self.spec = spec
        self.data = data
        self.collective = collective or LocalCollective()
        self.n_train = data.n_train
        self.batch_size = self._batch_size()
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self.total_steps = min(spec.train.max_steps or math.inf,
                               (spec.train.epochs or math.inf) * self.steps_per_epoch)
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.eval_pending = False   # an epoch ended and its validation metrics are not yet reported
        self.breakdown = StepBreakdown()
        self.best_metric: str | None = None
        self.best: BestEpoch | None = None
        self.stop_metric: str | None = None
        self.watch: BestEpoch | None = None
        self.stopped_early = False

    def _batch_size(self) -> int:
        train = self.spec.train
        if train.optimizer == "gd":
            return self.n_train
        size = train.batch_size or min(DEFAULT_BATCH_SIZE, self.n_train)
        if size > self.n_train:
            raise UserError(f"train.batch_size is {size}, larger than the {self.n_train} training samples",
                            where="train.batch_size", fix=f"set it to at most {self.n_train}")
        return size

    @property
    def done(self) -> bool:
        """Whether the job has taken all its steps, or stopped early (train.early_stopping)."""
        return self.step >= self.total_steps or self.stopped_early

    def check(self) -> None:
        """Nothing to check beyond what the data source did."""

    def next_share(self) -> Share:
        """This member's rows of the global batch the next step trains on (see `DataSource.share`)."""
        return self.data.share(self.spec.train.seed, self.epoch, self.position, self.batch_size,
                               self.collective.rank, self.collective.world_size)

    def advance(self, samples: int, loss: float, lr: float, signal: float, bytes_read: float = 0.0,
                data_wait_s: float = 0.0) -> StepReport:
        """Count a completed step of `samples` rows; the report of it (with the group's I/O since
        the previous step)."""
        epoch = self.epoch
        self.step += 1
        self.position += samples
        epoch_done = self.position >= self.n_train
        if epoch_done:
            self.epoch += 1
            self.position = 0
            self.eval_pending = True
        return StepReport(self.step, epoch, loss, samples, lr, epoch_done, signal, bytes_read, data_wait_s)

    def record_evaluation(self, metrics: dict) -> None:
        """Take in the validation metrics of the current state (an epoch's end, or the final ones):
        on train.keep_best, keep what returning to it needs when it is the best so far
        (`keep_best_state`); stop when early stopping's metric has not improved for its patience.
        A learner that watches no metric (`best_metric` and `stop_metric` None) selects nothing."""
        self.eval_pending = False
        if self.best_metric:
            self.best = judge(self.best, self.best_metric, metrics[self.best_metric[4:]], self.epoch, self.step)
            if self.best.stale == 0:
                self.keep_best_state(metrics)
        stopping = self.spec.train.early_stopping
        if self.stop_metric and stopping is not None:
            self.watch = judge(self.watch, self.stop_metric, metrics[self.stop_metric[4:]], self.epoch, self.step,
                               stopping.min_delta)
            self.stopped_early = self.watch.stale >= stopping.patience

    def keep_best_state(self, metrics: dict) -> None:
        """Keep what `finish` needs to return to the state whose evaluation is `metrics`, the best so
        far on train.keep_best (nothing here)."""

    def finish(self, metrics: dict) -> dict:
        """The last evaluation's metrics."""
        return metrics

    def gradient_noise(self) -> tuple[float, float] | None:
        """Not measured."""
        return None

    def progress_state(self) -> dict:
        """The progress part of a state dict (step, epoch, position, eval_pending)."""
        return {"step": self.step, "epoch": self.epoch, "position": self.position, "eval_pending": self.eval_pending}

    def selection_state(self) -> dict:
        """The model selection part of a state dict (best, watch, stopped_early)."""
        return {"best": None if self.best is None else asdict(self.best),
                "watch": None if self.watch is None else asdict(self.watch), "stopped_early": self.stopped_early}

    def load_selection(self, selection: dict) -> None:
        """Continue from the model selection part of a state dict (absent parts: nothing selected yet)."""
        self.best = BestEpoch(**selection["best"]) if selection.get("best") else None
        self.watch = BestEpoch(**selection["watch"]) if selection.get("watch") else None
        self.stopped_early = bool(selection.get("stopped_early", False))

    def load_progress(self, state: dict) -> None:
        """Continue from the progress part of a state dict."""
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.eval_pending = bool(state["eval_pending"])


def learner_class(kind: str) -> type:
    """The learner class of a model kind: a plugin's, XGBoost's for trees, else the torch trainer
    (the other built-in kinds and `python:` models)."""
    plugin = LEARNERS.get(kind)
    if plugin is not None:
        return plugin
    if kind in TREE_KINDS:
        from elastrain.train.trees import TreeLearner

        return TreeLearner
    from elastrain.train.trainer import Trainer

    return Trainer


def build_learner(spec: JobSpec, data: DataSource | None = None, collective: Collective | None = None,
                  device: str = "cpu") -> Learner:
    """The learner of `spec`'s model kind on `data` (default: the spec's data source, opened).

    Raises:
        UserError: the data cannot be read, or does not fit the spec.
    """
    import_plugins(spec.plugins)   # a spec that crossed to this process unvalidated (pickled) names them
    data = open_source(spec) if data is None else data
    return learner_class(spec.model.kind)(spec, data, collective, device)
