"""How a round's client updates become the next global model: pure functions over plain state.

A client trains the round's global weights `w` on its own rows and reports its update
`delta = w_client - w` with the examples it trained on. The server needs only the round's sums,
`sum_i n_i * delta_i` and `sum_i n_i` (`RoundSum`), which is all that secure aggregation lets it
see; so the same aggregation serves plain and masked rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from elastrain.spec.federated import FederatedSpec


@dataclass(frozen=True)
class ClientUpdate:
    """One client's report of a round.

    Attributes:
        delta: its trained weights minus the round's global weights, flat float64 (P,).
        examples: the rows it trained on (its weight in the mean).
    """

    delta: np.ndarray
    examples: int


@dataclass(frozen=True)
class RoundSum:
    """What the server learns of a round: the examples-weighted sum of the updates, float64 (P,),
    the examples, and how many clients reported."""

    weighted_delta: np.ndarray
    examples: int
    clients: int


@dataclass(frozen=True)
class ServerState:
    """The global model between rounds.

    Attributes:
        weights: the global weights, flat float64 (P,).
        rounds: rounds aggregated so far.
        first_moment, second_moment: FedAdam's server moments, float64 (P,) (None for the others).
    """

    weights: np.ndarray
    rounds: int = 0
    first_moment: np.ndarray | None = None
    second_moment: np.ndarray | None = None


def round_sum(updates: Sequence[ClientUpdate]) -> RoundSum:
    """The sums of a round's updates, as the server would learn them through secure aggregation.

    Raises:
        ValueError: no update, or one of another size than the first.
    """
    if not updates:
        raise ValueError("a round needs at least one client update")
    size = updates[0].delta.shape
    total = np.zeros(size, np.float64)
    for update in updates:
        if update.delta.shape != size:
            raise ValueError(f"a client update of shape {update.delta.shape}, not {size}")
        total += update.examples * update.delta.astype(np.float64)
    return RoundSum(total, sum(u.examples for u in updates), len(updates))


def aggregate(spec: FederatedSpec, state: ServerState, summed: RoundSum) -> ServerState:
    """The global model after a round whose updates sum to `summed`.

    fedavg and fedprox (McMahan et al. 2017; Li et al. 2020): w + sum n_i delta_i / sum n_i, the
    examples-weighted mean of the clients' models. fedadam (Reddi et al. 2021, Algorithm 2, with
    that mean update as the pseudo-gradient): m = beta1 m + (1 - beta1) d; v = beta2 v + (1 - beta2)
    d^2; w + server_lr * m / (sqrt(v) + tau).

    Raises:
        ValueError: a round of no examples.
    """
    if summed.examples <= 0:
        raise ValueError("a round whose clients trained on no examples cannot be aggregated")
    mean_delta = summed.weighted_delta / summed.examples
    if spec.strategy != "fedadam":
        return ServerState(state.weights + mean_delta, state.rounds + 1)
    first = np.zeros_like(mean_delta) if state.first_moment is None else state.first_moment
    second = np.zeros_like(mean_delta) if state.second_moment is None else state.second_moment
    first = spec.beta1 * first + (1 - spec.beta1) * mean_delta
    second = spec.beta2 * second + (1 - spec.beta2) * np.square(mean_delta)
    weights = state.weights + spec.eta * first / (np.sqrt(second) + spec.tau)
    return ServerState(weights, state.rounds + 1, first, second)
