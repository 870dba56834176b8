"""What `elastrain optimize` measures of each candidate: size on disk, CPU latency at batch 1 and
batch 64, throughput, and the validation metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from elastrain.train.losses import predictions
from elastrain.train.metrics import classification_metrics, confusion, regression_metrics, regression_sums

BATCHES = (1, 64)       # the batch sizes latency is reported at
EVAL_BATCH = 512        # rows scored per call when computing the validation metrics


@dataclass(frozen=True)
class Latency:
    """Wall time of one call on a batch, over `calls` calls after a warm-up (milliseconds)."""

    batch: int
    p50_ms: float
    p99_ms: float
    calls: int

    @property
    def samples_per_s(self) -> float:
        """Throughput at the median call."""
        return self.batch / (self.p50_ms / 1000)


def latency(network: Any, features: np.ndarray, batch: int, seconds: float = 1.0, max_calls: int = 2000,
            warmup: int = 10) -> Latency:
    """Times `network` on batches of `batch` rows cut in turn from `features` (N, F), for about
    `seconds` of calls (at least 20, at most `max_calls`), after `warmup` untimed calls."""
    rows = len(features)
    batches = [torch.from_numpy(np.ascontiguousarray(features[np.arange(i, i + batch) % rows]))
               for i in range(0, max(rows, batch), batch)][:64]
    with torch.no_grad():
        for i in range(warmup):
            network(batches[i % len(batches)])
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(times) < max_calls and (len(times) < 20 or time.perf_counter() < deadline):
            data = batches[len(times) % len(batches)]
            start = time.perf_counter()
            network(data)
            times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
    return Latency(batch, round(float(p50), 4), round(float(p99), 4), len(times))


def scores_of(network: Any, features: np.ndarray) -> np.ndarray:
    """`network`'s scores (N, outputs) for `features` (N, F), in batches."""
    with torch.no_grad():
        parts = [network(torch.from_numpy(np.ascontiguousarray(features[i:i + EVAL_BATCH])))
                 for i in range(0, len(features), EVAL_BATCH)]
    return torch.cat(parts).numpy()


def validation_metrics(scores: np.ndarray, targets: np.ndarray, task: str, n_classes: int | None) -> dict[str, float]:
    """The metrics training reports (accuracy, precision, recall, F1 macro; or MSE, R²) of
    `scores` (N, outputs) against `targets` (N,), keyed as training keys them without `val_`."""
    predicted = predictions(torch.from_numpy(scores), task).numpy()
    if task == "regression":
        return regression_metrics(regression_sums(predicted, targets))
    metrics = classification_metrics(confusion(predicted, targets, n_classes or 2))
    return {name: value for name, value in metrics.items() if isinstance(value, float)}
