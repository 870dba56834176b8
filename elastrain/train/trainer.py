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
import time
from pathlib import Path

import numpy as np
import torch

from elastrain.data.rows import DataSource
from elastrain.errors import TrainingDiverged, UserError, first_line
from elastrain.models import build_model
from elastrain.models.dropout import sample_masks
from elastrain.spec import JobSpec
from elastrain.spec.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from elastrain.spec.models import FieldError, check_loss_options
from elastrain.train import metrics as metric_fns
from elastrain.train.artifact import save_model
from elastrain.train.learner import Collective, LearnerBase, StepReport
from elastrain.train.losses import class_weight_vector, loss_sum, output_size, predictions
from elastrain.train.noise import GradientNoiseEstimate, local_batch_harmonic
from elastrain.train.optim import build_optimizer, lr_factor
from elastrain.train.selection import watched_metrics

# The process's random generator is shared by the jobs of a process (the server's, or threads of
# the SDK): whoever seeds and draws from it, or saves and restores it, holds this lock, so that one
# job's restore cannot rewind another's parameter draws.
_GLOBAL_RNG = threading.RLock()
# What to change when a model of this kind cannot take the data (see Trainer.check).
# Scalars the step's all-reduce carries after the gradient (see Trainer._gradient_buffer).
SCALARS = 6
_MODEL_FIXES = {
    "cnn": "use fewer model.channels or a smaller model.kernel_size: every conv block halves the image's sides",
    "mlp": "check model.hidden",
}


class Trainer(LearnerBase):
    """One replica of a data-parallel torch job: model, optimizer, data and progress (the learner of
    every built-in model kind and of `python:` models; see `elastrain.train.learner.Learner`).

    Args:
        spec: the job.
        dataset: the job's rows (see `elastrain.data.rows.DataSource`).
        collective: how gradients and statistics are added across workers; on a CUDA device,
            one that adds CUDA tensors (NCCL).
        device: where the model, its optimizer state, the training data and the gradient
            buffer live ("cpu", "cuda", "cuda:N"). State dicts are on the CPU whatever it is, so a
            checkpoint taken on one device resumes on another.
    """

    def __init__(self, spec: JobSpec, dataset: DataSource, collective: Collective | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(spec, dataset, collective)
        self.device = torch.device(device)
        self.loss_name = spec.loss
        # Parameters are drawn from the job's seed, so every replica starts identical.
        self.n_outputs = output_size(dataset.task, dataset.n_classes, self.loss_name)
        with _GLOBAL_RNG:
            _seed_everything(spec.train.seed)
            self.model = build_model(spec.model, dataset.input_shape, self.n_outputs,
                                     feature_variance=dataset.feature_variance()).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.gradient_size = sum(p.numel() for p in self.params)   # the all-reduce buffer's gradient part
        self.buffer = self._gradient_buffer()
        self.io_seen = (0, 0.0)   # the data source's (bytes_read, wait_s) the previous step reported
        self.optimizer = build_optimizer(spec.train, self.params)
        self.noise = GradientNoiseEstimate()
        self.class_weights, self.label_smoothing = self._loss_options()
        measured = CLASSIFICATION_METRICS if dataset.task == "classification" else REGRESSION_METRICS
        self.best_metric, self.stop_metric = watched_metrics(spec.train, dataset.task, measured)
        self.best_state: dict | None = None       # the best evaluation's {"model": parameters on the CPU, "metrics"}

    def _loss_options(self) -> tuple[torch.Tensor | None, float]:
        """train.class_weights as a (n_classes,) tensor on the device (or None) and train.label_smoothing.

        Raises:
            UserError: an option the loss cannot take, or a class the target does not hold.
        """
        train = self.spec.train
        try:
            check_loss_options(train, self.loss_name)
        except FieldError as exc:
            raise UserError(str(exc), where=".".join(exc.loc)) from None
        weights = None
        if self.data.task == "classification":
            weights = class_weight_vector(train.class_weights, self.data.class_counts(), self._class_labels())
        return (None if weights is None else torch.from_numpy(weights).to(self.device)), train.label_smoothing

    def _gradient_buffer(self) -> torch.Tensor:
        """The one buffer the group adds up each step: every parameter's gradient, which autograd
        accumulates into it in place (each `.grad` is a view of it, so no copy is made before the
        all-reduce), then six scalars: the bytes this worker read from storage and the seconds its
        steps waited for rows since its previous step, the squared norm of its mean gradient (with
        the global mean it measures the gradient noise), the loss sum, the signal, the sample count.

        Raises:
            UserError: the model's trainable parameters are not all of one floating-point dtype.
        """
        dtypes = {p.dtype for p in self.params} or {torch.float32}
        if len(dtypes) > 1 or not next(iter(dtypes)).is_floating_point:
            raise UserError(f"the model's trainable parameters have dtypes {sorted(map(str, dtypes))}; "
                            "elastrain trains models whose parameters share one floating-point dtype",
                            where="model", fix="convert the model to one dtype, e.g. model.float()")
        buffer = torch.zeros(self.gradient_size + SCALARS, dtype=dtypes.pop(), device=self.device)
        offset = 0
        for param in self.params:
            param.grad = buffer[offset:offset + param.numel()].view_as(param)
            offset += param.numel()
        return buffer

    def _class_labels(self) -> list:
        """The class labels by id: the preprocessor's, else the ids themselves."""
        if self.data.preprocessor is not None:
            return self.data.preprocessor.classes
        return list(range(self.data.n_classes or 0))

    def _rows(self, rows: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows from the data source as tensors on the device."""
        return tuple(torch.from_numpy(a if a.flags.writeable else a.copy()).to(self.device)
                     for a in map(np.ascontiguousarray, rows))

    def check(self) -> None:
        """Run the model once on two samples of the data's shape (in eval mode, no gradient, the
        random generator untouched), so that a model that cannot take the data fails before any
        worker starts.

        Raises:
            UserError: the model raised on the data's shape (exit code 2).
        """
        with _GLOBAL_RNG:
            rng = self._rng_state()
            try:
                self._check_shapes()
            finally:
                self.model.train()
                self._set_rng_state(rng)

    def _check_shapes(self) -> None:
        """Run the model once on two samples of zeros (see :meth:`check`)."""
        shape = "x".join(map(str, self.data.input_shape))
        # Two samples of the data's shape, zeros: checking the shapes reads no rows (the driver of a
        # job on sharded data reads only their metadata).
        x = torch.zeros((2, math.prod(self.data.input_shape)), device=self.device)   # rows come flattened
        y = torch.zeros(2, dtype=torch.int64 if self.data.task == "classification" else torch.float32,
                        device=self.device)
        try:
            with torch.no_grad():
                output = self.model.eval()(x)
                if tuple(output.shape) != (2, self.n_outputs):
                    raise UserError(f"the model maps samples of shape {shape} to {tuple(output.shape)[1:]} per sample, "
                                    f"but the loss needs ({self.n_outputs},)", where="model",
                                    fix="make its last layer output one score per class (one for regression)")
                loss_sum(self.loss_name, output, y, self.class_weights, self.label_smoothing)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"the model cannot take samples of shape {shape}: {first_line(exc)}", where="model",
                            fix=_MODEL_FIXES.get(self.spec.model.kind, "check the model against the data")) from None

    def keep_best_state(self, metrics: dict) -> None:
        """Keep a copy of the parameters, the best so far on train.keep_best, with their `metrics`."""
        model = {name: value.detach().to("cpu", copy=True) for name, value in self.model.state_dict().items()}
        self.best_state = {"model": model, "metrics": metrics}

    def finish(self, metrics: dict) -> dict:
        """The job's final validation metrics, given the last evaluation's: with train.keep_best,
        the best evaluation's, whose parameters are then loaded into the model."""
        if self.best_state is None:
            return metrics
        self.model.load_state_dict(self.best_state["model"])
        return self.best_state["metrics"]

    def train_step(self, signal: float = 0.0) -> StepReport:
        """Take one optimizer step on the next global batch, this member computing its share.

        `signal` is added up over the group with the gradients and returned in the report,
        so that one worker can ask the whole group to stop after the same step.

        Raises:
            TrainingDiverged: the loss or gradient is not finite; no state was changed.
            Exception: whatever the collective raises when a peer is lost; no state was changed
                (the random generator is rewound, so the step can be redone exactly).
        """
        share = self.next_share()
        mine = torch.tensor(share.ids, device=self.device)
        rng_before = self._rng_state()
        self.model.train()
        began = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        local_loss = torch.zeros((), device=self.device)
        if len(mine):
            x, y = self._rows((share.x, share.y))
            with sample_masks(self.model, self.spec.train.seed, self.epoch, mine):
                local_loss = loss_sum(self.loss_name, self.model(x), y, self.class_weights, self.label_smoothing)
            local_loss.backward()
        computed = time.perf_counter()
        grouped = self.collective.world_size > 1
        buffer = self.buffer
        gradient = buffer[:self.gradient_size]
        read, waited = self.data.bytes_read, self.data.wait_s
        buffer[-6] = read - self.io_seen[0]
        buffer[-5] = waited - self.io_seen[1]
        buffer[-4] = _squared_norm(gradient) / len(mine) ** 2 if grouped and len(mine) else 0.0
        buffer[-3] = local_loss.detach()
        buffer[-2] = signal
        buffer[-1] = len(mine)
        reducing = time.perf_counter()
        try:
            self.collective.all_reduce_sum(buffer)
        except Exception:
            self._set_rng_state(rng_before)
            self.breakdown.interrupt()
            raise
        reduced = time.perf_counter()
        bytes_read, data_wait_s, local_sqr_sum, loss_total, signal_sum, samples = buffer[-SCALARS:].tolist()
        self.io_seen = (read, waited)
        buffer /= samples   # sums over the global batch -> means
        mean_loss = loss_total / samples
        # Also the check for a diverged step: a NaN or infinity anywhere in the gradient (or a
        # component beyond 1e19) makes the squared norm non-finite; one pass over the gradient.
        mean_sqr = float(_squared_norm(gradient))
        if not (math.isfinite(mean_loss) and math.isfinite(mean_sqr)):
            raise TrainingDiverged(
                f"the loss became {'non-finite' if math.isfinite(mean_loss) else mean_loss} "
                f"at step {self.step + 1} (epoch {self.epoch + 1}); the job stopped with its last good state saved",
                fix=f"lower train.lr (now {self.spec.train.lr:g}), e.g. --set train.lr={self.spec.train.lr / 10:g}",
            )
        if grouped:
            self._measure_noise(local_sqr_sum, mean_sqr, share.batch)
        clip = self.spec.train.clip_grad_norm
        if clip is not None and mean_sqr > clip * clip:   # after the all-reduce: the same on any world size
            gradient.mul_(clip / math.sqrt(mean_sqr))
        lr = self.spec.train.lr * lr_factor(self.spec.train.schedule, self.step, int(self.total_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        updating = time.perf_counter()
        self.optimizer.step()
        ended = time.perf_counter()
        self.breakdown.add((computed - began) + (ended - updating), reduced - reducing, ended)
        return self.advance(share.batch, mean_loss, lr, signal_sum, bytes_read, data_wait_s)

    def _rng_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The random generators a step draws from: the CPU's, and the device's on a GPU."""
        # Under the lock, as every other use of the generator: torch.get_rng_state holds the
        # generator's mutex while it allocates, and a garbage collection there can hand the GIL to
        # another thread that then waits on that mutex while holding the GIL (two replicas'
        # threads deadlocked so in test_training_options, torch 2.13).
        with _GLOBAL_RNG:
            return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def _set_rng_state(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        with _GLOBAL_RNG:
            torch.set_rng_state(state[0])
            if state[1] is not None:
                torch.cuda.set_rng_state(state[1], self.device)

    def _measure_noise(self, local_sqr_sum: float, mean_sqr: float, samples: int) -> None:
        """Update the gradient-noise estimate from one step of a group (see `train.noise`)."""
        holders, local_batch = local_batch_harmonic(samples, self.collective.world_size)
        if holders >= 2:
            self.noise.update(local_sqr_sum / holders, mean_sqr, local_batch, samples)

    def gradient_noise(self) -> tuple[float, float] | None:
        """The smoothed gradient noise measured so far, as (squared norm of the true gradient,
        variance of a mean gradient over the job's batch size `batch_size`), the statistics the
        scheduler's efficiency model takes; None before any step ran on two or more workers."""
        if not self.noise.measured:
            return None
        return self.noise.sqr, self.noise.trace / self.batch_size

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Metrics of the current model on the validation split, each worker scoring its share
        (the confusion matrix or the regression sums are added over the group: exact)."""
        self.breakdown.interrupt()
        self.model.eval()
        classification = self.data.task == "classification"
        stats = np.zeros((self.data.n_classes, self.data.n_classes) if classification else
                         len(metric_fns.REGRESSION_STATS))
        # One chunk of rows in memory at a time, and only its sums kept: the memory an evaluation
        # takes does not grow with the validation split.
        for rows in self.data.val_chunks(self.collective.rank, self.collective.world_size):
            x, y = self._rows(rows)
            predicted, target = predictions(self.model(x), self.data.task).cpu().numpy(), y.cpu().numpy()
            stats += (metric_fns.confusion(predicted.astype(np.int64), target, self.data.n_classes) if classification
                      else metric_fns.regression_sums(predicted, target))
        summed = torch.from_numpy(stats).to(self.device)
        self.collective.all_reduce_sum(summed)
        totals = summed.cpu().numpy()
        if self.data.task == "classification":
            return metric_fns.classification_metrics(totals)
        return metric_fns.regression_metrics(totals)

    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: parameters, optimizer, progress, RNG; every
        tensor on the CPU (tensors already there are not copied)."""
        return {
            "model": _on_cpu(self.model.state_dict()),
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            **self.progress_state(),
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "grad_noise": self.noise.state_dict(),
            "selection": {**self.selection_state(), "best_state": self.best_state},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` of a trainer of the same job."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_progress(state)
        # cuda_rng is absent from a checkpoint taken on a CPU
        self._set_rng_state((state["torch_rng"], state.get("cuda_rng") if self.device.type == "cuda" else None))
        self.noise.load_state_dict(state.get("grad_noise"))   # absent from checkpoints of older versions
        selection = state.get("selection") or {}
        self.load_selection(selection)
        self.best_state = selection.get("best_state")

    def save(self, directory: Path, job: dict) -> Path:
        """Write the model, its preprocessing and the job spec `job` to `directory` (see
        `elastrain.train.artifact.save_model`).

        Raises:
            WriteFailed: the disk is full or read-only.
        """
        return save_model(directory, self.model, self.spec.model, self.data.input_shape, self.n_outputs,
                          self.data.task, self.loss_name, self.data.preprocessor, job)


def _squared_norm(vector: torch.Tensor) -> torch.Tensor:
    """The squared Euclidean norm of a flat `vector` (a 0-d tensor on its device).

    A float32 dot product: relative error about 5e-7 on 600k gradient components against float64,
    far below the step-to-step noise it measures, at a sixth of the time of a float64 norm
    (0.09 vs 0.51 ms, 1 CPU thread), which had cost the step 3 ms with the old finite check.
    """
    return torch.dot(vector, vector)


def _on_cpu(state):
    """`state` (nested dicts and lists of tensors) with every tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(value) for value in state)
    return state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
