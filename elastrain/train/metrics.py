"""Evaluation metrics computed from sufficient statistics.

Workers compute statistics on their share of the data (a confusion matrix, or sums of
errors); the statistics add up across workers, and the metrics are a pure function of
the sum. The definitions follow scikit-learn's (zero where a ratio is 0/0; macro
averages over the classes that occur in the targets or the predictions).
"""

from __future__ import annotations

import numpy as np

REGRESSION_STATS = ("n", "sum_y", "sum_y2", "sse", "sae")


def confusion(predicted: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix counts, rows = true class, columns = predicted class (float64)."""
    flat = np.bincount(target * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.float64)


def regression_sums(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The additive statistics of :data:`REGRESSION_STATS` (float64)."""
    y = target.astype(np.float64)
    err = predicted.astype(np.float64) - y
    return np.array([len(y), y.sum(), np.square(y).sum(), np.square(err).sum(), np.abs(err).sum()])


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_metrics(matrix: np.ndarray) -> dict:
    """Accuracy, precision / recall / F1 (macro, weighted, per class) and the confusion matrix."""
    true_pos = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _ratio(true_pos, predicted)
    recall = _ratio(true_pos, support)
    f1 = _ratio(2 * true_pos, support + predicted)
    present = (support + predicted) > 0
    metrics: dict = {"accuracy": float(true_pos.sum() / max(matrix.sum(), 1.0))}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        metrics[f"{name}_macro"] = float(values[present].mean()) if present.any() else 0.0
        metrics[f"{name}_weighted"] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
        metrics[f"{name}_per_class"] = [float(v) for v in values]
    metrics["confusion_matrix"] = matrix.astype(np.int64).tolist()
    return metrics


def regression_metrics(sums: np.ndarray) -> dict:
    """MSE, MAE and R² from :func:`regression_sums` added over shards."""
    n, sum_y, sum_y2, sse, sae = (float(v) for v in sums)
    total = sum_y2 - sum_y * sum_y / n
    # A constant target has no variance to explain: scikit-learn's convention then.
    r2 = 1.0 - sse / total if total > 0 else float(sse == 0)
    return {"mse": sse / n, "mae": sae / n, "r2": r2}
