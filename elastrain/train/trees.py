"""The learner of tree models (`model.kind: gbdt | random_forest | decision_tree`) on XGBoost.

One step is one boosting round. The training rows are partitioned over the current members of
the group (each holds its contiguous share of the job's seeded order, as XGBoost's histogram
input), and XGBoost sums the histograms over them with its communicator, one per generation of
the group (`elastrain.train.booster_comm`). Every member holds the same booster, which is the
whole state: a new member receives it, a resized group re-partitions the rows and goes on from it.

The quantile cuts (each feature's histogram bins) are computed once per job, in every process
alike, from the same `model.cut_sample` rows, and every partition is binned by them; so the trees
do not depend on how many members hold the rows, nor on when the group was resized (see
`TreeModelSpec` for the parameters that would break this).

Every `model.eval_every` rounds (and after the last), an evaluation on the validation rows: every
member scores its share and the group adds their statistics; for AUC the margins are gathered
(`elastrain.train.tree_metrics`).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from elastrain.data.rows import DataSource
from elastrain.errors import UserError
from elastrain.spec import JobSpec, TreeModelSpec
from elastrain.spec.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    TREE_CLASSIFICATION_METRICS,
    TREE_REGRESSION_METRICS,
)
from elastrain.train import booster_data, tree_metrics
from elastrain.train.booster_comm import BoosterComm, peer_lost
from elastrain.train.learner import Collective, LearnerBase, PeerLost, StepReport
from elastrain.train.selection import watched_metrics

T = TypeVar("T")
# The losses a tree model trains (XGBoost's objective for each), as `model.json` names them.
TREE_LOSSES = ("auto", "bce", "cross_entropy", "mse")


def tree_objective(task: str, n_classes: int | None) -> tuple[str, str, str, int]:
    """(XGBoost objective, its training metric, the loss as elastrain names it, scores per sample)
    for a task: binary log loss, softmax over `n_classes`, or squared error."""
    if task == "regression":
        return "reg:squarederror", "rmse", "mse", 1
    if n_classes == 2:
        return "binary:logistic", "logloss", "bce", 1
    return "multi:softprob", "mlogloss", "cross_entropy", int(n_classes or 0)


def booster_params(model: TreeModelSpec, objective: str, metric: str, n_classes: int | None, seed: int,
                   threads: int) -> dict:
    """XGBoost's parameters of a tree model spec (`hist`, on the CPU)."""
    params = {
        "objective": objective, "eval_metric": metric, "tree_method": "hist", "device": "cpu",
        "eta": model.eta, "max_depth": model.max_depth, "min_child_weight": model.min_child_weight,
        "subsample": model.subsample, "colsample_bytree": model.colsample_bytree,
        "colsample_bynode": model.node_colsample, "lambda": model.reg_lambda, "alpha": model.reg_alpha,
        "num_parallel_tree": model.parallel_trees, "max_bin": model.max_bin, "nthread": threads,
        "seed": seed % 2**31, "seed_per_iteration": True, "verbosity": 1,
    }
    if objective == "multi:softprob":
        params["num_class"] = n_classes
    return params


class TreeLearner(LearnerBase):
    """One replica of a tree job: the booster, this member's partition of the rows, progress.

    Args:
        spec: the job (its model a `TreeModelSpec`).
        data: its rows.
        collective: the group's collective (it carries the round's signal and the evaluation;
            XGBoost's own communicator sums the histograms).
        device: unused: trees train on the CPU.

    Raises:
        UserError: a setting trees cannot take, or a metric they do not measure.
    """

    def __init__(self, spec: JobSpec, data: DataSource, collective: Collective | None = None,
                 device: str = "cpu") -> None:
        import xgboost

        super().__init__(spec, data, collective)
        self.model: TreeModelSpec = spec.model
        self.total_steps = min(spec.train.max_steps or math.inf, self.model.boosting_rounds)
        self.objective, self.train_metric, self.loss_name, self.n_outputs = tree_objective(data.task, data.n_classes)
        self.threads = max(1, int(spec.resources.cpus_per_worker))
        self.params = booster_params(self.model, self.objective, self.train_metric, data.n_classes,
                                     spec.train.seed, self.threads)
        classification = data.task == "classification"
        measured = (CLASSIFICATION_METRICS + TREE_CLASSIFICATION_METRICS if classification
                    else REGRESSION_METRICS + TREE_REGRESSION_METRICS)
        self.best_metric, self.stop_metric = watched_metrics(spec.train, data.task, measured)
        self.best_metrics: dict | None = None     # the evaluation of the best round (train.keep_best)
        self.comm = BoosterComm(spec.resources.hang_timeout_s)
        self.model_bytes = b""          # the booster after `step` rounds, as UBJSON, while no Booster is built
        self.booster: xgboost.Booster | None = None
        self.membership: tuple | None = None   # (generation, rank, world size) the partitions below are of
        self.matrices: booster_data.Partition | None = None
        self.pages: tempfile.TemporaryDirectory | None = None   # external memory's pages (sharded data)
        self.val_slot = (0, 0)          # where this member's validation rows lie among the group's
        self.val_labels = np.zeros(0)   # this member's validation targets
        self.val_targets = np.zeros(0, np.float32)   # the group's, gathered (classification: for AUC)
        self.io_seen = (0, 0.0)
        self.cuts = self._cut_reference()

    def _batch_size(self) -> int:
        # A round learns from every training row.
        return self.data.n_train

    def check(self) -> None:
        """Refuse what trees cannot take before any worker starts.

        Raises:
            UserError: a loss other than the task's, class weights, label smoothing or gradient clipping.
        """
        train = self.spec.train
        if train.loss not in TREE_LOSSES:
            raise UserError(f"tree models learn log loss (classification) or squared error (regression), not "
                            f"loss {train.loss}", where="train.loss", fix="remove train.loss")
        for field, value in (("class_weights", train.class_weights), ("label_smoothing", train.label_smoothing or None),
                             ("clip_grad_norm", train.clip_grad_norm)):
            if value is not None:
                raise UserError(f"train.{field} applies to networks, not tree models", where=f"train.{field}",
                                fix=f"remove train.{field}")

    def _cut_reference(self):
        """The quantile cuts of the job: a QuantileDMatrix of `model.cut_sample` training rows, the
        same in every process (`booster_data.cut_rows`), built before any communicator forms so
        that it is this process's alone."""
        import xgboost

        x, y = booster_data.cut_rows(self.data, self.spec.data.streamed, self.spec.train.seed,
                                     min(self.model.cut_sample, self.n_train))
        return xgboost.QuantileDMatrix(x, label=y, max_bin=self.model.max_bin, nthread=self.threads)

    def _partition(self) -> None:
        """This member's training and validation rows for the group's current membership (built
        again after every resize or recovery): in memory, or paged to local disk for sharded data."""
        membership = (getattr(self.collective, "generation", 0), self.collective.rank, self.collective.world_size)
        if membership == self.membership:
            return
        self.comm.ensure(self.collective)   # building a matrix sums over the ring (the quantile sketch's sizes)
        rank, world = self.collective.rank, self.collective.world_size
        self.model_bytes = self._raw()   # a new Booster: its prediction caches were of the old partitions
        self.booster = None
        self.matrices = None   # the old partition's pages are freed before the new one's are written
        if self.spec.data.streamed:
            if self.pages is None:
                self.pages = tempfile.TemporaryDirectory(prefix="elastrain-xgboost-pages-")
            self.matrices = booster_data.paged(self.data, self.spec.train.seed, rank, world, self.cuts,
                                               self.model.max_bin, self.threads, self.pages.name)
        else:
            self.matrices = booster_data.in_memory(self.data, self.spec.train.seed, rank, world, self.cuts,
                                                   self.model.max_bin, self.threads)
        self.val_labels = self.matrices.val_targets
        counts = torch.zeros(world, dtype=torch.float64)
        counts[rank] = len(self.val_labels)
        self.collective.all_reduce_sum(counts)
        start = int(counts[:rank].sum())
        self.val_slot = (start, start + len(self.val_labels))
        if self.data.task == "classification":   # AUC ranks every validation row: the group's labels, gathered
            gathered = torch.zeros(int(counts.sum()), dtype=torch.float32)
            gathered[start:start + len(self.val_labels)] = torch.from_numpy(self.val_labels.astype(np.float32))
            self.collective.all_reduce_sum(gathered)
            self.val_targets = gathered.numpy()
        self.membership = membership

    def _ensure_booster(self):
        """The booster after `step` rounds, over this membership's partitions."""
        import xgboost

        self._partition()
        if self.booster is None:
            model = bytearray(self.model_bytes) if self.model_bytes else None
            matrices = self.matrices
            self.booster = xgboost.Booster(self.params, cache=[matrices.train, matrices.val], model_file=model)
        return self.booster

    def train_step(self, signal: float = 0.0) -> StepReport:
        """Grow the next round's trees, the group summing the histograms of its partitions.

        Raises:
            PeerLost: a peer was lost; the booster is as it was before the round.
        """
        read, waited = self.data.bytes_read, self.data.wait_s
        scalars = torch.tensor([signal, read - self.io_seen[0], waited - self.io_seen[1]], dtype=torch.float64)
        self.collective.all_reduce_sum(scalars)
        began = time.perf_counter()
        value = self._on_ring(self._round)
        ended = time.perf_counter()
        self.breakdown.add(ended - began, 0.0, ended)
        self.io_seen = (read, waited)
        loss = value * value if self.train_metric == "rmse" else value
        signal_sum, bytes_read, data_wait_s = scalars.tolist()
        report = self.advance(self.n_train, loss, self.model.eta, signal_sum, bytes_read, data_wait_s)
        if self.step % self.model.eval_every and self.step < self.total_steps:   # no evaluation this round
            self.eval_pending = False
            return replace(report, epoch_done=False)
        return report

    def _round(self) -> float:
        """One round on this member's partition (on XGBoost's communicator thread); the training
        metric after it.

        Raises:
            PeerLost: as `train_step`.
        """
        booster = self._ensure_booster()   # on this generation's ring (see `_partition`)
        booster.update(self.matrices.train, self.step)
        evaluation = booster.eval_set([(self.matrices.train, "train")], self.step)
        self.model_bytes = b""
        return float(evaluation.rsplit(":", 1)[1])

    def _on_ring(self, work: Callable[[], T]) -> T:
        """`work()` on XGBoost's communicator thread; a broken ring is PeerLost, the booster rewound.

        Raises:
            PeerLost: a peer was lost; the booster holds `step` rounds.
        """
        import xgboost

        def guarded() -> T:
            try:
                return work()
            except xgboost.core.XGBoostError as exc:
                self._rewind()
                if not peer_lost(exc):
                    raise
                self.comm.close()
                self.membership = None   # the partitions are built again on the next ring
                raise PeerLost(f"XGBoost's communicator broke in round {self.step + 1}: "
                               f"{_last_reason(str(exc))}") from exc

        return self.comm.run(guarded)

    def _rewind(self) -> None:
        """Drop whatever a failed round left in the booster: it holds `step` rounds again."""
        booster = self.booster
        if booster is not None:
            kept = booster[:self.step] if booster.num_boosted_rounds() > self.step else booster
            self.model_bytes = bytes(kept.save_raw("ubj")) if self.step else b""
            self.booster = None

    def _raw(self) -> bytes:
        """The booster after `step` rounds, as UBJSON."""
        if self.booster is None:
            return self.model_bytes
        return bytes(self.booster.save_raw("ubj"))

    def evaluate(self) -> dict:
        """Metrics of the current booster on the validation rows: each member scores its share and
        sums its statistics, the group adds them (`tree_metrics`); for AUC, the members' margins
        are gathered and every member ranks all of them."""
        self.breakdown.interrupt()
        booster = self._on_ring(self._ensure_booster)
        mine = booster.predict(self.matrices.val, output_margin=True).reshape(-1, self.n_outputs)
        task, n_classes = self.data.task, self.data.n_classes
        sums = torch.from_numpy(tree_metrics.validation_sums(mine, self.val_labels, task, n_classes))
        self.collective.all_reduce_sum(sums)
        metrics = tree_metrics.metrics_of(sums.numpy(), task, n_classes)
        if task == "classification":
            start, end = self.val_slot
            margins = torch.zeros((len(self.val_targets), self.n_outputs), dtype=torch.float32)
            margins[start:end] = torch.from_numpy(mine)
            self.collective.all_reduce_sum(margins)
            metrics["auc"] = tree_metrics.auc(margins.numpy(), self.val_targets, n_classes)
        return metrics

    def keep_best_state(self, metrics: dict) -> None:
        """Remember the best round's evaluation (its trees are the booster's first `best.step` rounds)."""
        self.best_metrics = metrics

    def finish(self, metrics: dict) -> dict:
        """The job's final metrics: with train.keep_best, the best round's, the booster cut back to
        it; with `feature_gain`, each feature's total gain, largest first ([name, gain] pairs)."""
        self.comm.run(self.comm.close)
        if self.best is not None and self.best_metrics is not None and self.best.step < self.step:
            self.model_bytes = bytes(self._on_ring(self._ensure_booster)[:self.best.step].save_raw("ubj"))
            self.booster = None
            metrics = self.best_metrics
        return {**metrics, "feature_gain": self.feature_gain()}

    def state_dict(self) -> dict:
        """The booster (UBJSON bytes as a uint8 tensor), the progress and the model selection."""
        raw = self._raw()
        booster = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
        return {
            "booster": booster,
            **self.progress_state(),
            "io_seen": list(self.io_seen),
            "selection": {**self.selection_state(), "best_metrics": self.best_metrics},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` of a learner of the same job."""
        self.model_bytes = state["booster"].numpy().tobytes()
        self.booster = None
        self.load_progress(state)
        selection = state.get("selection") or {}
        self.load_selection(selection)
        self.best_metrics = selection.get("best_metrics")

    def feature_gain(self) -> list[list]:
        """Each feature's total gain over the booster's splits, largest first, as [name, gain] pairs
        (the preprocessing's feature names where it has them; features never split on are left out)."""
        booster = self.booster if self.booster is not None else _booster_of(self._raw(), self.params)
        preprocessor = self.data.preprocessor
        names = preprocessor.feature_names if preprocessor is not None else []
        gains = booster.get_score(importance_type="total_gain")   # keyed f0, f1, ... (features by position)
        named = [[names[int(key[1:])] if int(key[1:]) < len(names) else key, float(gain)]
                 for key, gain in gains.items()]
        return sorted(named, key=lambda pair: -pair[1])

    def save(self, directory: Path, job: dict) -> Path:
        """Write the booster in XGBoost's UBJSON format, its preprocessing and the job spec `job`
        to `directory` (see `elastrain.train.artifact.save_booster`).

        Raises:
            WriteFailed: the disk is full or read-only.
        """
        from elastrain.train.artifact import save_booster

        return save_booster(directory, self._raw(), self.model, self.data.input_shape, self.n_outputs, self.data.task,
                            self.loss_name, self.data.preprocessor, job)


def _booster_of(raw: bytes, params: dict):
    import xgboost

    return xgboost.Booster(params, model_file=bytearray(raw) if raw else None)


def _last_reason(message: str) -> str:
    """The innermost reason of an XGBoost error message (its last bullet before the stack trace)."""
    lines = [line.strip(" -") for line in message.split("Stack trace")[0].splitlines() if line.strip(" -")]
    return lines[-1] if lines else message[:200]
