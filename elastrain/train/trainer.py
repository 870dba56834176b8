"""What one data-parallel worker does: one training step, evaluation, and its state.

A step's update is a function of (training state, the global batch's sample indices).
Each of `world_size` workers takes its share of the indices, computes the gradient of
the loss *summed* over its share, and the shares are added by the collective; the
update uses the sum divided by the global batch size. So the update is the mean
gradient over exactly the global batch, whatever the number of workers and however
unevenly the batch is split. With world size 1 the collective does nothing, and this
is the whole single-process training path.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from elastrain.data import Dataset
from elastrain.data.sampler import global_batch, shard
from elastrain.errors import TrainingDiverged, UserError, first_line
from elastrain.models import build_model
from elastrain.spec import JobSpec
from elastrain.train import metrics as metric_fns
from elastrain.train.losses import loss_sum, output_size, predictions
from elastrain.train.noise import GradientNoiseEstimate, local_batch_harmonic
from elastrain.train.optim import build_optimizer, lr_factor

_MODEL_INIT = threading.Lock()
DEFAULT_BATCH_SIZE = 32
# What to change when a model of this kind cannot take the data (see Trainer.check_model).
_MODEL_FIXES = {
    "cnn": "use fewer model.channels or a smaller model.kernel_size: every conv block halves the image's sides",
    "mlp": "check model.hidden",
}
EVAL_CHUNK = 4096


class Collective(Protocol):
    """How workers add tensors together (torch.distributed in a worker group)."""

    rank: int
    world_size: int

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        """Replace `tensor` in place by its sum over all workers."""


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


class Trainer:
    """One replica of a data-parallel job: model, optimizer, data and progress.

    Args:
        spec: the job.
        dataset: the prepared data (every worker holds the same arrays).
        collective: how gradients and statistics are added across workers.
    """

    def __init__(self, spec: JobSpec, dataset: Dataset, collective: Collective | None = None) -> None:
        self.spec = spec
        self.data = dataset
        self.collective = collective or LocalCollective()
        self.loss_name = spec.loss
        self.n_train = len(dataset.y_train)
        self.batch_size = self._batch_size()
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self.total_steps = min(
            spec.train.max_steps or math.inf,
            (spec.train.epochs or math.inf) * self.steps_per_epoch,
        )
        # Parameters are drawn from the job's seed, so every replica starts identical. The random
        # generator is global to the process: the lock keeps jobs that start together in one
        # process (the server's) from drawing from each other's seeding.
        self.n_outputs = output_size(dataset.task, dataset.n_classes, self.loss_name)
        with _MODEL_INIT:
            _seed_everything(spec.train.seed)
            self.model = build_model(spec.model, dataset.input_shape, self.n_outputs)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.gradient_size = sum(p.numel() for p in self.params)   # the all-reduce buffer's gradient part
        self.optimizer = build_optimizer(spec.train, self.params)
        self.x_train = torch.from_numpy(dataset.x_train)
        self.y_train = torch.from_numpy(dataset.y_train)
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.eval_pending = False   # an epoch ended and its validation metrics are not yet reported
        self.noise = GradientNoiseEstimate()

    def _batch_size(self) -> int:
        train = self.spec.train
        if train.optimizer == "gd":
            return self.n_train
        size = train.batch_size or min(DEFAULT_BATCH_SIZE, self.n_train)
        if size > self.n_train:
            raise UserError(f"train.batch_size is {size}, larger than the {self.n_train} training samples",
                            where="train.batch_size", fix=f"set it to at most {self.n_train}")
        return size

    def check_model(self) -> None:
        """Run the model once on two training samples (in eval mode, no gradient, the random
        generator untouched), so that a model that cannot take the data fails before any worker starts.

        Raises:
            UserError: the model raised on the data's shape (exit code 2).
        """
        rng = torch.get_rng_state()
        shape = "x".join(map(str, self.data.input_shape))
        try:
            with torch.no_grad():
                output = self.model.eval()(self.x_train[:2])
                if tuple(output.shape) != (2, self.n_outputs):
                    raise UserError(f"the model maps samples of shape {shape} to {tuple(output.shape)[1:]} per sample, "
                                    f"but the loss needs ({self.n_outputs},)", where="model",
                                    fix="make its last layer output one score per class (one for regression)")
                loss_sum(self.loss_name, output, self.y_train[:2])
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"the model cannot take samples of shape {shape}: {first_line(exc)}", where="model",
                            fix=_MODEL_FIXES.get(self.spec.model.kind, "check the model against the data")) from None
        finally:
            self.model.train()
            torch.set_rng_state(rng)

    @property
    def done(self) -> bool:
        """Whether the job has taken all its steps."""
        return self.step >= self.total_steps

    def next_batch(self) -> np.ndarray:
        """The sample indices of the global batch the next step trains on."""
        return global_batch(self.n_train, self.spec.train.seed, self.epoch, self.position, self.batch_size)

    def train_step(self, indices: np.ndarray | None = None, signal: float = 0.0) -> StepReport:
        """Take one optimizer step on the global batch `indices` (default: the next batch).

        `signal` is added up over the group with the gradients and returned in the report,
        so that one worker can ask the whole group to stop after the same step.

        Raises:
            TrainingDiverged: the loss or gradient is not finite; no state was changed.
            Exception: whatever the collective raises when a peer is lost; no state was changed
                (the random generator is rewound, so the step can be redone exactly).
        """
        indices = self.next_batch() if indices is None else indices
        mine = torch.tensor(shard(indices, self.collective.rank, self.collective.world_size))
        rng_before = torch.get_rng_state()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)
        local_loss = torch.zeros(())
        if len(mine):
            local_loss = loss_sum(self.loss_name, self.model(self.x_train[mine]), self.y_train[mine])
            local_loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        grouped = self.collective.world_size > 1
        # The squared norm of this worker's mean gradient rides along with the sums (one float,
        # no extra collective): with the global mean it measures the gradient noise.
        local_sqr = _squared_norm(grads) / len(mine) ** 2 if grouped and len(mine) else 0.0
        buffer = torch.cat([g.reshape(-1) for g in grads]
                           + [torch.tensor([local_sqr]), local_loss.detach().reshape(1),
                              torch.tensor([signal, float(len(mine))])])
        try:
            self.collective.all_reduce_sum(buffer)
        except Exception:
            torch.set_rng_state(rng_before)
            raise
        signal_sum = float(buffer[-2])
        local_sqr_sum = float(buffer[-4])
        buffer /= float(buffer[-1])   # sums over the global batch -> means
        mean_loss = float(buffer[-3])
        if not (bool(torch.isfinite(buffer[:self.gradient_size]).all()) and math.isfinite(mean_loss)):
            raise TrainingDiverged(
                f"the loss became {'non-finite' if math.isfinite(mean_loss) else mean_loss} "
                f"at step {self.step + 1} (epoch {self.epoch + 1}); the job stopped with its last good state saved",
                fix=f"lower train.lr (now {self.spec.train.lr:g}), e.g. --set train.lr={self.spec.train.lr / 10:g}",
            )
        offset = 0
        for param in self.params:
            size = param.numel()
            param.grad = buffer[offset:offset + size].view_as(param)
            offset += size
        if grouped:
            self._measure_noise(local_sqr_sum, buffer[:self.gradient_size], len(indices))
        lr = self.spec.train.lr * lr_factor(self.spec.train.schedule, self.step, int(self.total_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return self._advance(len(indices), mean_loss, lr, signal_sum)

    def _measure_noise(self, local_sqr_sum: float, mean_gradient: torch.Tensor, samples: int) -> None:
        """Update the gradient-noise estimate from one step of a group (see `train.noise`)."""
        holders, local_batch = local_batch_harmonic(samples, self.collective.world_size)
        if holders >= 2:
            self.noise.update(local_sqr_sum / holders, _squared_norm([mean_gradient]), local_batch, samples)

    def gradient_noise(self) -> tuple[float, float] | None:
        """The smoothed gradient noise measured so far, as (squared norm of the true gradient,
        variance of a mean gradient over the job's batch size `batch_size`), the statistics the
        scheduler's efficiency model takes; None before any step ran on two or more workers."""
        if not self.noise.measured:
            return None
        return self.noise.sqr, self.noise.trace / self.batch_size

    def _advance(self, samples: int, loss: float, lr: float, signal: float) -> StepReport:
        epoch = self.epoch
        self.step += 1
        self.position += samples
        epoch_done = self.position >= self.n_train
        if epoch_done:
            self.epoch += 1
            self.position = 0
            self.eval_pending = True
        return StepReport(self.step, epoch, loss, samples, lr, epoch_done, signal)

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict:
        """Metrics of the current model on `split` ("val" or "train"), each worker scoring its share."""
        x = getattr(self.data, f"x_{split}")
        y = getattr(self.data, f"y_{split}")
        mine = shard(np.arange(len(y)), self.collective.rank, self.collective.world_size)
        self.model.eval()
        predicted = [predictions(self.model(torch.from_numpy(x[chunk])), self.data.task).numpy()
                     for chunk in np.array_split(mine, max(1, math.ceil(len(mine) / EVAL_CHUNK)))
                     if len(chunk)]
        predicted_all = np.concatenate(predicted) if predicted else np.zeros(0)
        if self.data.task == "classification":
            stats = metric_fns.confusion(predicted_all.astype(np.int64), y[mine], self.data.n_classes)
        else:
            stats = metric_fns.regression_sums(predicted_all, y[mine])
        summed = torch.from_numpy(stats)
        self.collective.all_reduce_sum(summed)
        if self.data.task == "classification":
            return metric_fns.classification_metrics(summed.numpy())
        return metric_fns.regression_metrics(summed.numpy())

    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: parameters, optimizer, progress, RNG."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "eval_pending": self.eval_pending,
            "torch_rng": torch.get_rng_state(),
            "grad_noise": self.noise.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` of a trainer of the same job."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.eval_pending = bool(state["eval_pending"])
        torch.set_rng_state(state["torch_rng"])
        self.noise.load_state_dict(state.get("grad_noise"))   # absent from checkpoints of older versions


def _squared_norm(tensors: list[torch.Tensor]) -> float:
    """The squared Euclidean norm of `tensors` taken together, added up in float64."""
    return sum(float(t.detach().double().square().sum()) for t in tensors)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
