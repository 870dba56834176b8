"""Every metric equals scikit-learn's on the same predictions."""

import numpy as np
import pytest
from sklearn import metrics as sk

from elastrain.train import metrics


def _classification_cases():
    rng = np.random.default_rng(7)
    for n_classes in (2, 3, 10):
        y_true = rng.integers(0, n_classes, 500)
        noisy = rng.integers(0, n_classes, 500)
        y_pred = np.where(rng.random(500) < 0.7, y_true, noisy)
        yield n_classes, y_true, y_pred
    # A class that never occurs and a class that is never predicted.
    yield 4, np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 0, 0])


@pytest.mark.parametrize(("n_classes", "y_true", "y_pred"), list(_classification_cases()))
def test_classification_metrics_equal_sklearn(n_classes, y_true, y_pred):
    got = metrics.classification_metrics(metrics.confusion(y_pred, y_true, n_classes))
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-12)
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        assert got[f"precision_{average}"] == pytest.approx(p, abs=1e-12)
        assert got[f"recall_{average}"] == pytest.approx(r, abs=1e-12)
        assert got[f"f1_{average}"] == pytest.approx(f, abs=1e-12)
    labels = list(range(n_classes))
    p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    np.testing.assert_allclose(got["precision_per_class"], p, atol=1e-12)
    np.testing.assert_allclose(got["recall_per_class"], r, atol=1e-12)
    np.testing.assert_allclose(got["f1_per_class"], f, atol=1e-12)
    np.testing.assert_array_equal(got["confusion_matrix"], sk.confusion_matrix(y_true, y_pred, labels=labels))


def test_statistics_add_up_across_shards():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    parts = [metrics.confusion(p, t, 5) for p, t in zip(np.array_split(y_pred, 3), np.array_split(y_true, 3),
                                                          strict=True)]
    assert metrics.classification_metrics(sum(parts)) == metrics.classification_metrics(
        metrics.confusion(y_pred, y_true, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(150, 70, 400)
    y_pred = y_true + rng.normal(0, 30, 400)
    shards = [metrics.regression_sums(p, t) for p, t in zip(np.array_split(y_pred, 4),
                                                             np.array_split(y_true, 4), strict=True)]
    got = metrics.regression_metrics(sum(shards))
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y_true, y_pred), rel=1e-10)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y_true, y_pred), rel=1e-10)
    assert got["r2"] == pytest.approx(sk.r2_score(y_true, y_pred), rel=1e-9)


def test_r2_of_a_constant_target_follows_sklearn():
    y = np.full(5, 3.0)
    assert metrics.regression_metrics(metrics.regression_sums(y, y))["r2"] == sk.r2_score(y, y)
    off = y + 1
    assert metrics.regression_metrics(metrics.regression_sums(off, y))["r2"] == sk.r2_score(y, off)
