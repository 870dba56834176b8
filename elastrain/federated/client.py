"""What a federated client does in a round: train the global model on the rows it keeps, with the
job's own model, optimizer and trainer, and report only the difference it made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from elastrain.data.dataset import Dataset
from elastrain.federated.privacy import clipped
from elastrain.federated.strategy import ClientUpdate
from elastrain.spec import JobSpec
from elastrain.spec.federated import FederatedSpec
from elastrain.train.trainer import Trainer


def client_rows(data: Dataset, rows: np.ndarray) -> Dataset:
    """A client's data set: training rows `rows` (int64 indices into `data`'s training split) and
    no validation rows (the server evaluates the global model), with `data`'s preprocessing."""
    return replace(data, x_train=data.x_train[rows], y_train=data.y_train[rows], x_val=data.x_val[:0],
                   y_val=data.y_val[:0], warnings=[])


def local_spec(spec: JobSpec, federated: FederatedSpec, rows: int, seed: int) -> JobSpec:
    """The job as one client trains it in one round: `local_epochs` over its `rows` rows in batches
    of `local_batch_size` (its rows, if fewer), seeded by `seed`; no model selection."""
    train = spec.train.model_copy(update={
        "epochs": federated.local_epochs, "max_steps": None, "seed": seed, "keep_best": None,
        "early_stopping": None, "batch_size": min(federated.local_batch_size, rows)})
    return spec.model_copy(update={"train": train})


def global_weights(trainer: Trainer) -> np.ndarray:
    """A trainer's trainable parameters as one flat float64 vector (P,), in `trainer.params` order."""
    return parameters_to_vector(trainer.params).detach().double().cpu().numpy()


def load_weights(trainer: Trainer, weights: np.ndarray) -> None:
    """Set a trainer's trainable parameters from a flat vector (P,) of `global_weights`' layout."""
    with torch.no_grad():
        vector_to_parameters(torch.from_numpy(weights).to(trainer.params[0].dtype), trainer.params)


def local_update(spec: JobSpec, federated: FederatedSpec, data: Dataset, weights: np.ndarray,
                 seed: int, on_step: Callable[[int, int], None] | None = None) -> ClientUpdate:
    """One client's round: the global `weights` trained on `data` (its rows alone; see `client_rows`)
    for `federated.local_epochs`, and the difference it made. `on_step(step, steps)` is called
    after each local step (1-based) of the round's `steps`.

    Under `federated.privacy` the update is clipped and weighs 1 (`privacy.clipped`).

    FedProx's proximal term (Li et al. 2020) is the gradient `mu * (w - w_global)` added to each
    step's mean gradient, the gradient of `mu / 2 * ||w - w_global||^2` added to the loss.

    Raises:
        TrainingDiverged: the local loss became non-finite.
    """
    trainer = Trainer(local_spec(spec, federated, data.n_train, seed), data)
    load_weights(trainer, weights)
    start = [p.detach().clone() for p in trainer.params]
    mu = federated.mu
    if mu > 0:
        def proximal(optimizer, args, kwargs) -> None:
            for param, anchor in zip(trainer.params, start, strict=True):
                param.grad.add_(param.detach() - anchor, alpha=mu)

        trainer.optimizer.register_step_pre_hook(proximal)
    while not trainer.done:
        trainer.train_step()
        if on_step:
            on_step(trainer.step, int(trainer.total_steps))
    update = ClientUpdate(global_weights(trainer) - weights, data.n_train)
    return clipped(update, federated.privacy) if federated.privacy else update
