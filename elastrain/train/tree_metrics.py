"""The validation metrics of a tree model, from its margins (XGBoost's raw scores, before the
sigmoid or softmax), computed over a group whose members each score a share of the rows.

Everything but AUC is a sum over rows (a confusion matrix, the log loss's sum, the regression
sums of `elastrain.train.metrics`): each member sums its share and the group adds the sums. AUC
ranks every row against every other, so it takes the margins of all the rows; it is computed
exactly (scikit-learn's `roc_auc_score`), in about 40 bytes a row.
"""

from __future__ import annotations

import math

import numpy as np

from elastrain.train import metrics as metric_fns


def validation_sums(margins: np.ndarray, targets: np.ndarray, task: str, n_classes: int | None) -> np.ndarray:
    """The additive statistics of margins `margins` (n, outputs) against `targets` (n,), float64:
    the sums of a group's members are the statistics of all their rows (see `metrics_of`).
    Classification: the confusion matrix (k * k, true class by row) then the log loss's sum (the
    true class's probability clipped to [eps, 1 - eps], as scikit-learn's `log_loss`) and the row
    count; regression: `metrics.regression_sums`."""
    if task == "regression":
        return metric_fns.regression_sums(margins[:, 0], targets)
    labels = targets.astype(np.int64)
    if margins.shape[1] == 1:   # one column of probabilities, not two: the validation rows may be many
        positive = 1.0 / (1.0 + np.exp(-margins[:, 0].astype(np.float64)))
        true_class = np.where(labels == 1, positive, 1.0 - positive)
        predicted = (margins[:, 0] > 0).astype(np.int64)
    else:
        true_class = softmax(margins)[np.arange(len(labels)), labels]
        predicted = margins.argmax(axis=1)
    eps = np.finfo(np.float64).eps
    log_loss_sum = float(-np.log(np.clip(true_class, eps, 1 - eps)).sum())
    matrix = metric_fns.confusion(predicted, labels, int(n_classes or 2))
    return np.concatenate([matrix.ravel(), [log_loss_sum, len(labels)]])


def metrics_of(sums: np.ndarray, task: str, n_classes: int | None) -> dict:
    """The metrics of a group's summed `validation_sums`: those of every model of the task
    (`elastrain.train.metrics`), with `log_loss` (classification) or `rmse` (regression)."""
    if task == "regression":
        metrics = metric_fns.regression_metrics(sums)
        metrics["rmse"] = math.sqrt(metrics["mse"])
        return metrics
    k = int(n_classes or 2)
    metrics = metric_fns.classification_metrics(sums[:k * k].reshape(k, k))
    metrics["log_loss"] = float(sums[k * k] / sums[k * k + 1]) if sums[k * k + 1] else float("nan")
    return metrics


def auc(margins: np.ndarray, targets: np.ndarray, n_classes: int) -> float:
    """The validation AUC of margins (n, outputs) against class ids `targets` (n,): binary, or the
    macro one-vs-rest mean for more classes (scikit-learn's `roc_auc_score(multi_class="ovr")` of
    the softmax probabilities); NaN where the rows hold a single class. Binary rows are ranked by
    their margin, the order of their probabilities."""
    labels = targets.astype(np.int64)
    if margins.shape[1] == 1:
        return binary_auc(margins[:, 0], labels == 1)
    probabilities = softmax(margins)
    return float(np.mean([binary_auc(probabilities[:, k], labels == k) for k in range(n_classes)]))


def validation_metrics(margins: np.ndarray, targets: np.ndarray, task: str, n_classes: int | None) -> dict:
    """Every validation metric of margins (n, outputs) against `targets` (n,) in one process."""
    metrics = metrics_of(validation_sums(margins, targets, task, n_classes), task, n_classes)
    if task != "regression":
        metrics["auc"] = auc(margins, targets, int(n_classes or 2))
    return metrics


def softmax(margins: np.ndarray) -> np.ndarray:
    """Class probabilities (n, k), float64, of margins (n, k)."""
    shifted = np.exp(margins.astype(np.float64) - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under the ROC curve of `scores` (n,) for the rows where `positive` (n,) bool holds,
    tied scores counting half (scikit-learn's `roc_auc_score`: the trapezoid over distinct
    scores); NaN when the rows hold a single class."""
    if not len(scores):
        return float("nan")
    order = np.argsort(scores)
    ranked = scores[order]
    hits = positive[order].view(np.uint8)
    del order
    starts = np.concatenate([[0], np.flatnonzero(ranked[1:] != ranked[:-1]) + 1])   # each distinct score's first row
    del ranked
    positives = np.add.reduceat(hits, starts, dtype=np.int64)
    negatives = np.diff(np.append(starts, len(hits))) - positives
    n_pos, n_neg = int(positives.sum()), int(negatives.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives   # negatives scored strictly lower than each distinct score
    return float((positives * (below + 0.5 * negatives)).sum() / (n_pos * n_neg))
