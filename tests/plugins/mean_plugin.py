"""A test-only plugin: a learner that fits the mean of the target and a source that generates rows.

Neither is torch's trainer nor an in-memory table: they show that a new learner and a new data
source are each one class registered behind their protocols (`elastrain.train.learner.Learner`,
`elastrain.data.rows.DataSource`), trained by the elastic engine unchanged. A job names this module
under `plugins:` and lies beside it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from elastrain.data.rows import RowsByIndex
from elastrain.plugins import register_learner, register_source
from elastrain.train.learner import LearnerBase, StepReport

# Each batch a source reads takes this long, as a read from a remote store would: long enough for
# a resize to land mid-epoch.
READ_S = 0.004


def target(rows: np.ndarray) -> np.ndarray:
    """The target of row ids `rows`: an uneven pattern, so a row read twice or missed moves the mean."""
    return ((rows * 7919) % 101).astype(np.float32) + rows.astype(np.float32) / 1000


@register_source("counting")
class CountingSource(RowsByIndex):
    """`counting:N`: N training rows and N // 4 validation rows, row i's features (i, i mod 5) and
    target `target(i)`, made on demand from the index (nothing is held in memory)."""

    task = "regression"
    n_classes = None
    input_shape = (2,)
    preprocessor = None

    def __init__(self, spec) -> None:
        self.size = int(spec.data.source_arg)
        self.warnings: list[str] = []

    @property
    def n_train(self) -> int:
        return self.size

    @property
    def n_val(self) -> int:
        return self.size // 4

    def _rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(READ_S)
        return np.stack([ids, ids % 5], axis=1).astype(np.float32), target(ids)

    def train_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._rows(np.asarray(indices, dtype=np.int64))

    def val_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._rows(np.asarray(indices, dtype=np.int64) + self.size)

    def feature_variance(self) -> float:
        return 1.0

    def class_counts(self) -> None:
        return None

    def fingerprint(self) -> str:
        return f"counting:{self.size}"


@register_learner("mean")
class MeanLearner(LearnerBase):
    """Predicts the mean of the targets it has trained on: each step adds its global batch's target
    sum and count (a collective), so after an epoch the mean is the training split's, whatever the
    world size and however the group was resized, if and only if every row counted exactly once."""

    def __init__(self, spec, data, collective=None, device: str = "cpu") -> None:
        super().__init__(spec, data, collective)
        self.total = 0.0
        self.count = 0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def train_step(self, signal: float = 0.0) -> StepReport:
        share = self.next_share()
        y = share.y
        sums = torch.tensor([float(np.sum(y, dtype=np.float64)), float(len(y)),
                             float(np.sum((y - self.mean) ** 2, dtype=np.float64)), signal], dtype=torch.float64)
        self.collective.all_reduce_sum(sums)   # raises when a peer is lost: nothing has changed yet
        total, count, squared, signal_sum = sums.tolist()
        self.total += total
        self.count += int(count)
        return self.advance(share.batch, squared / count, 0.0, signal_sum)

    def evaluate(self) -> dict:
        y = np.concatenate([y for _, y in self.data.val_chunks(self.collective.rank, self.collective.world_size)])
        sums = torch.tensor([float(np.sum((y - self.mean) ** 2, dtype=np.float64)), float(len(y))],
                            dtype=torch.float64)
        self.collective.all_reduce_sum(sums)
        squared, count = sums.tolist()
        return {"mse": squared / count, "rmse": math.sqrt(squared / count)}

    def state_dict(self) -> dict:
        return {"total": self.total, "count": self.count, **self.progress_state()}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])
        self.load_progress(state)

    def save(self, directory: Path, job: dict) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mean.json").write_text(json.dumps({"mean": self.mean, "count": self.count, "job": job}))
        return directory
