"""The names of the validation metrics a spec may refer to (train.keep_best, early_stopping.metric)."""

from __future__ import annotations

import difflib

CLASSIFICATION_METRICS = tuple(f"val_{name}" for name in (
    "accuracy", "precision_macro", "precision_weighted", "recall_macro", "recall_weighted",
    "f1_macro", "f1_weighted"))
REGRESSION_METRICS = ("val_mse", "val_mae", "val_r2")
# What tree models measure besides (`elastrain.train.trees`): from every validation prediction, not additive sums.
TREE_CLASSIFICATION_METRICS = ("val_auc", "val_log_loss")
TREE_REGRESSION_METRICS = ("val_rmse",)
VALIDATION_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS + TREE_CLASSIFICATION_METRICS + TREE_REGRESSION_METRICS
LOWER_IS_BETTER = frozenset({"val_mse", "val_mae", "val_log_loss", "val_rmse"})
# What `early_stopping.metric: auto` watches when `keep_best` names none.
DEFAULT_METRIC = {"classification": "val_accuracy", "regression": "val_mse"}



def metric_name(name: str) -> str:
    """`name` as a validation metric of :data:`VALIDATION_METRICS`, `val_` prefixed if it was not.

    Raises:
        ValueError: no such metric (the message names the nearest one).
    """
    full = name if name.startswith("val_") else f"val_{name}"
    if full in VALIDATION_METRICS:
        return full
    near = difflib.get_close_matches(full, VALIDATION_METRICS, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    raise ValueError(f"unknown validation metric '{name}'; {hint}choose one of {', '.join(VALIDATION_METRICS)}")
