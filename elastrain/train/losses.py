"""Losses, summed over the samples of a shard so that shards of any size add up to the
global batch, and the mapping from model outputs to predictions."""

from __future__ import annotations

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


def loss_sum(loss: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss summed (not averaged) over the batch.

    Args:
        loss: a loss name of the spec (mse, mae, cross_entropy, bce, hinge, squared_hinge).
        outputs: (N, n_outputs) scores.
        targets: (N,) float targets (regression) or int64 class ids.
    """
    if loss == "mse":
        return F.mse_loss(outputs.squeeze(1), targets, reduction="sum")
    if loss == "mae":
        return F.l1_loss(outputs.squeeze(1), targets, reduction="sum")
    if loss == "cross_entropy":
        return F.cross_entropy(outputs, targets, reduction="sum")
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets.to(outputs.dtype),
                                                  reduction="sum")
    margins = F.relu(1 - _signed_targets(outputs, targets) * outputs)
    return (margins if loss == "hinge" else margins.square()).sum()


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
