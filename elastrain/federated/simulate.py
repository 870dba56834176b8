"""A simulated federation: the job's rows split over clients, rounds run by the server's loop.

Every round asks `clients_in_round` clients drawn by the job's seed; each trains the global model
on its rows (`client.local_update`); the server aggregates the sums of those that reported
(`strategy.aggregate`) and evaluates the global model on the job's validation split. Who trains
the clients is the caller's choice (`TrainClients`): one after another in this process
(`in_process`), or in turns over a pool of processes (`federated.pool.ClientPool`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from elastrain.data.dataset import Dataset
from elastrain.federated.client import client_rows, global_weights, load_weights, local_update
from elastrain.federated.privacy import epsilon, noised
from elastrain.federated.secagg import plain_bytes, secure_round_sum, threshold
from elastrain.federated.strategy import ClientUpdate, RoundSum, ServerState, aggregate, round_sum
from elastrain.spec import JobSpec
from elastrain.spec.federated import FederatedSpec
from elastrain.train.trainer import Trainer


@dataclass(frozen=True)
class ClientsRound:
    """What the clients asked in a round gave back.

    Attributes:
        updates: the updates of the clients that reported, in `reported` order.
        reported: the clients that reported before the deadline, ascending.
        dropped: the clients whose process died mid-round.
        late: the clients cut at the round's deadline.
        asked: the clients the round asked.
        connected: the clients it could have asked (its sampling rate is asked / connected).
        secured: a round whose clients ran secure aggregation themselves: its sum (None when it
            could not be unmasked) and the bytes the protocol moved; `updates` is then empty.
    """

    updates: tuple[ClientUpdate, ...]
    reported: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    late: tuple[int, ...] = ()
    asked: tuple[int, ...] = ()
    connected: int = 0
    secured: tuple[RoundSum | None, int] | None = None


# (round index from 0, the clients asked, the global weights (P,)) -> what they gave back
TrainClients = Callable[[int, np.ndarray, np.ndarray], ClientsRound]
# (round index from 0, the global weights (P,)) -> what the clients the round asked gave back
RunRound = Callable[[int, np.ndarray], ClientsRound]


@dataclass(frozen=True)
class RoundRecord:
    """One round of a federation: the clients asked and what became of them, whether the global
    model moved (at least `min_clients` reported), its validation metrics after the round, and the
    round's wall time (s); under client-level privacy, the epsilon spent so far (at the spec's
    delta), else None; the bytes the clients and the server exchanged for the updates (the global
    weights sent out left aside: the same either way), through secure aggregation when it is on."""

    round: int
    asked: tuple[int, ...]
    reported: tuple[int, ...]
    dropped: tuple[int, ...]
    late: tuple[int, ...]
    aggregated: bool
    metrics: dict
    seconds: float
    epsilon: float | None = None
    update_bytes: int = 0


def round_seed(seed: int, round_: int, client: int) -> int:
    """The seed client `client` trains round `round_` with (its batches' order and dropout): the
    same in every run of the job, different for every client and round."""
    return int(np.random.default_rng([seed, round_, client]).integers(2**31))


def chosen_clients(seed: int, round_: int, clients: int, asked: int) -> np.ndarray:
    """The clients round `round_` asks, `asked` of `clients` drawn without replacement, sorted."""
    return np.sort(np.random.default_rng([seed, round_, 2**20]).choice(clients, asked, replace=False))


def in_process(spec: JobSpec, federated: FederatedSpec, data: Dataset, parts: Sequence[np.ndarray]) -> TrainClients:
    """Clients trained one after another in this process; every client asked reports."""
    def train(round_: int, asked: np.ndarray, weights: np.ndarray) -> ClientsRound:
        updates = tuple(local_update(spec, federated, client_rows(data, parts[c]), weights,
                                     round_seed(spec.train.seed, round_, int(c))) for c in asked)
        return ClientsRound(updates, tuple(int(c) for c in asked))

    return train


def simulate(spec: JobSpec, federated: FederatedSpec, data: Dataset, parts: Sequence[np.ndarray],
             on_round: Callable[[RoundRecord], None] | None = None,
             clients: TrainClients | None = None) -> tuple[ServerState, list[RoundRecord]]:
    """Run `federated.rounds` rounds over clients holding the training rows `parts` (one index
    array per client, see `federated.partition`) of `data`, trained by `clients` (default
    `in_process`); the final global model and each round (see `run_rounds`).
    """
    train = clients or in_process(spec, federated, data, parts)
    per_round = federated.clients_in_round(len(parts))

    def run_round(round_: int, weights: np.ndarray) -> ClientsRound:
        asked = chosen_clients(spec.train.seed, round_, len(parts), per_round)
        result = train(round_, asked, weights)
        return replace(result, asked=tuple(int(c) for c in asked), connected=len(parts))

    server = Trainer(spec, data)
    return run_rounds(federated, server, run_round, on_round)


def run_rounds(federated: FederatedSpec, server: Trainer, run_round: RunRound,
               on_round: Callable[[RoundRecord], None] | None = None) -> tuple[ServerState, list[RoundRecord]]:
    """The server's loop: `federated.rounds` rounds, each run by `run_round` from the global model
    of `server` (whose weights it then holds), aggregated by the strategy and evaluated on the
    server's validation rows; the final global model and each round. A round where fewer than
    `federated.min_clients` reported leaves the global model as it was. With
    `federated.secure_aggregation` the server learns each round's sum through the protocol of
    `federated.secagg`, its clients played in this process. Under
    `federated.privacy` the server adds noise to each round's sum (`privacy.noised`) and the
    records carry the privacy spent.
    """
    state = ServerState(global_weights(server))
    records, rates = [], []
    privacy = federated.privacy
    for round_ in range(federated.rounds):
        began = time.perf_counter()
        result = run_round(round_, state.weights)
        summed, sent = _summed(federated, result)
        if summed is not None:
            state = aggregate(federated, state, noised(summed, privacy) if privacy else summed)
            load_weights(server, state.weights)
            rates.append(len(result.asked) / result.connected)
        record = RoundRecord(round_ + 1, result.asked, result.reported, result.dropped, result.late,
                             summed is not None, server.evaluate(), time.perf_counter() - began,
                             epsilon(privacy, rates) if privacy else None, sent)
        records.append(record)
        if on_round:
            on_round(record)
    return state, records


def _summed(federated: FederatedSpec, result: ClientsRound) -> tuple[RoundSum | None, int]:
    """The sum of a round's updates as the server learns it (None when too few reported: fewer than
    `min_clients`, or than secure aggregation's threshold), and the bytes that cost."""
    if result.secured is not None:
        summed, sent = result.secured
        return (summed if len(result.reported) >= federated.min_clients else None), sent
    if not federated.secure_aggregation:
        enough = len(result.reported) >= federated.min_clients
        return (round_sum(result.updates) if enough else None), plain_bytes(result.updates)
    least = threshold(len(result.asked), federated.min_clients)
    return secure_round_sum(result.updates, result.asked, result.reported, least)
