"""Losses, summed over the samples of a shard so that shards of any size add up to the
global batch, and the mapping from model outputs to predictions."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from elastrain.errors import UserError


def output_size(task: str, n_classes: int | None, loss: str) -> int:
    """How many scores per sample a model must output for this task and loss.

    Raises:
        UserError: the loss cannot train this data (bce on more than two classes).
    """
    if task == "regression":
        return 1
    assert n_classes is not None
    if loss == "bce":
        if n_classes != 2:
            raise UserError(f"loss bce (logistic regression) is binary, but the target has {n_classes} classes",
                            where="train.loss", fix="use model softmax or loss cross_entropy")
        return 1
    if loss in ("hinge", "squared_hinge") and n_classes == 2:
        return 1
    return n_classes  # cross_entropy; one-vs-rest hinge for more than two classes


def loss_sum(loss: str, outputs: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss summed (not averaged) over the batch, each sample's term weighted by its class.

    Dividing by the global batch's sample count (not by the sum of the weights) keeps shards of
    any size adding up to the same loss: scikit-learn's sample-weight convention.

    Args:
        loss: a loss name of the spec (mse, mae, cross_entropy, bce, hinge, squared_hinge).
        outputs: (N, n_outputs) scores.
        targets: (N,) float targets (regression) or int64 class ids.
        class_weights: (n_classes,) weight of each class id (classification), or None for all 1.
        label_smoothing: cross_entropy and bce: the share of the uniform distribution mixed into
            each target (cross_entropy as torch's `label_smoothing`, which also weighs the uniform
            part by class; bce: targets 0 and 1 become s/2 and 1 - s/2).
    """
    if loss == "mse":
        return F.mse_loss(outputs.squeeze(1), targets, reduction="sum")
    if loss == "mae":
        return F.l1_loss(outputs.squeeze(1), targets, reduction="sum")
    if loss == "cross_entropy":
        return F.cross_entropy(outputs, targets, weight=class_weights, label_smoothing=label_smoothing,
                               reduction="sum")
    weights = None if class_weights is None else class_weights[targets]
    if loss == "bce":
        soft = targets.to(outputs.dtype) * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(outputs.squeeze(1), soft, weight=weights, reduction="sum")
    margins = F.relu(1 - _signed_targets(outputs, targets) * outputs)
    per_sample = (margins if loss == "hinge" else margins.square()).sum(dim=1)
    return per_sample.sum() if weights is None else (per_sample * weights).sum()


def class_weight_vector(option: str | dict | None, class_counts: np.ndarray, classes: list) -> np.ndarray | None:
    """The weight of each class id, float32 (n_classes,), for train.class_weights; None when unset.

    `class_counts` are the training split's rows per class id, int64 (n_classes,).
    `balanced` gives n_samples / (n_classes * count of the class in the training split)
    (scikit-learn's `compute_class_weight`; a class absent from the split counts once); a
    mapping gives its labels their weights, and every other class 1.

    Raises:
        UserError: a label of the mapping is not one of the data's classes.
    """
    if option is None:
        return None
    if option == "balanced":
        counts = np.maximum(class_counts, 1)
        return (int(class_counts.sum()) / (len(classes) * counts)).astype(np.float32)
    index = {str(label): i for i, label in enumerate(classes)}
    unknown = [str(label) for label in option if str(label) not in index]
    if unknown:
        raise UserError(f"class weights name {', '.join(unknown)}, which the target does not hold",
                        where="train.class_weights",
                        fix=f"use the target's classes: {', '.join(map(str, classes[:20]))}")
    weights = np.ones(len(classes), dtype=np.float32)
    for label, weight in option.items():
        weights[index[str(label)]] = weight
    return weights


def _signed_targets(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # +1 for the true class and -1 for the others (one-vs-rest); one column when binary.
    if outputs.shape[1] == 1:
        return (2 * targets - 1).to(outputs.dtype).unsqueeze(1)
    return 2 * F.one_hot(targets, outputs.shape[1]).to(outputs.dtype) - 1


def predictions(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """Predicted values (regression) or class ids (classification) from model outputs."""
    if task == "regression":
        return outputs.squeeze(1)
    if outputs.shape[1] == 1:
        return (outputs.squeeze(1) > 0).long()
    return outputs.argmax(dim=1)
