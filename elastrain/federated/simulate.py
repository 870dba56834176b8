"""A federation simulated in one process: the job's rows split over clients, rounds run in turn.

The reference the distributed runner and the benchmark's peer are held to: every round asks
`clients_in_round` clients drawn by the job's seed, each trains the global model on its rows
(`client.local_update`), the server aggregates their sums (`strategy.aggregate`) and evaluates
the global model on the job's validation split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from elastrain.data.dataset import Dataset
from elastrain.federated.client import client_rows, global_weights, load_weights, local_update
from elastrain.federated.strategy import ServerState, aggregate, round_sum
from elastrain.spec import JobSpec
from elastrain.spec.federated import FederatedSpec
from elastrain.train.trainer import Trainer


@dataclass(frozen=True)
class RoundRecord:
    """One round of a federation: which clients trained, the global model's validation metrics
    after it, and its wall time (s)."""

    round: int
    clients: tuple[int, ...]
    metrics: dict
    seconds: float


def round_seed(seed: int, round_: int, client: int) -> int:
    """The seed client `client` trains round `round_` with (its batches' order and dropout): the
    same in every run of the job, different for every client and round."""
    return int(np.random.default_rng([seed, round_, client]).integers(2**31))


def chosen_clients(seed: int, round_: int, clients: int, asked: int) -> np.ndarray:
    """The clients round `round_` asks, `asked` of `clients` drawn without replacement, sorted."""
    return np.sort(np.random.default_rng([seed, round_, 2**20]).choice(clients, asked, replace=False))


def simulate(spec: JobSpec, federated: FederatedSpec, data: Dataset, parts: list[np.ndarray],
             on_round: Callable[[RoundRecord], None] | None = None) -> tuple[ServerState, list[RoundRecord]]:
    """Run `federated.rounds` rounds over clients holding the training rows `parts` (one index
    array per client, see `federated.partition`) of `data`; the final global model and each round.
    """
    server = Trainer(spec, data)
    state = ServerState(global_weights(server))
    records = []
    seed = spec.train.seed
    for round_ in range(federated.rounds):
        began = time.perf_counter()
        asked = chosen_clients(seed, round_, len(parts), federated.clients_in_round(len(parts)))
        updates = [local_update(spec, federated, client_rows(data, parts[c]), state.weights,
                                round_seed(seed, round_, int(c))) for c in asked]
        state = aggregate(federated, state, round_sum(updates))
        load_weights(server, state.weights)
        record = RoundRecord(round_ + 1, tuple(int(c) for c in asked), server.evaluate(),
                             time.perf_counter() - began)
        records.append(record)
        if on_round:
            on_round(record)
    return state, records
