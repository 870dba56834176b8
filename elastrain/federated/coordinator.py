"""The server's side of a federated job: clients join, are asked to train a round, report an update.

`RoundCoordinator` is shared by the job's server loop (`federated.serve.serve_rounds`, one round at
a time through `__call__`) and the API's client requests (`join`, `heartbeat`, `task`, `weights`,
`report`, from other threads). A client is connected while it has been heard from (any request)
within `SILENT_S`. A round starts once `min_clients` are connected, asks `clients_in_round` of
them (drawn by the job's seed and the round), and ends when every client asked has reported or
gone silent, or at the round's deadline. Waiting for clients longer than `wait_timeout_s` fails
the job with one line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from elastrain.errors import UserError
from elastrain.federated.simulate import ClientsRound, round_seed
from elastrain.federated.strategy import ClientUpdate
from elastrain.spec.federated import FederatedSpec

# A client is heard from at least every HEARTBEAT_S (its long polls and, while it trains, its
# heartbeats); one silent for SILENT_S is taken as gone. Generous, so that a busy client is not
# taken for a dead one: a round still ends at its deadline whatever the clients do.
HEARTBEAT_S = 2.0
SILENT_S = 30.0
# How long a client's request for a task waits for one before answering "none yet".
POLL_S = 10.0
# The methods a client's request may reach (through the job's driver).
CLIENT_CALLS = ("join", "heartbeat", "task", "round_weights", "report")


class Closed(Exception):
    """The job was ended (cancelled) while a round waited for its clients."""


class Refused(Exception):
    """A client's request that does not fit the round (HTTP 409): `str()` says why in one line."""


@dataclass(frozen=True)
class Task:
    """What a client asked in a round is told: the round (from 1), the seed of its local training,
    and the size of the global weights (float64)."""

    round: int
    seed: int
    parameters: int


class RoundCoordinator:
    """The rounds of one federated job as its clients see them; see the module docstring.

    Args:
        federated: the job's `federated:` section.
        seed: the job's seed (which clients a round asks, and their local seeds).
        clock: monotonic seconds (a test's clock may stand in).
    """

    def __init__(self, federated: FederatedSpec, seed: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.federated, self.seed, self.clock = federated, seed, clock
        self.changed = threading.Condition()
        self.heard: dict[int, float] = {}      # client -> when it was last heard from
        self.round = 0                         # the round being trained (0 before the first)
        self.asked: tuple[int, ...] = ()
        self.weights: np.ndarray | None = None
        self.reports: dict[int, ClientUpdate] = {}
        self.closed = False                    # the job has ended: no more tasks
        self.setup: dict | None = None         # what a client needs first (`federated.serve.client_setup`)

    # the clients' side ---------------------------------------------------------------------
    def join(self) -> tuple[int, dict]:
        """A new client's id (it takes part from the next round that starts) and the job's setup.

        Raises:
            Refused: the job is still reading its data, or has ended.
        """
        with self.changed:
            if self.closed:
                raise Refused("the job has ended: no more rounds")
            if self.setup is None:
                raise Refused("the job is still reading its data; join again in a few seconds")
            client = len(self.heard)
            self.heard[client] = self.clock()
            self.changed.notify_all()
            return client, self.setup

    def open(self, setup: dict) -> None:
        """Let clients join, giving each `setup`."""
        with self.changed:
            self.setup = setup

    def heartbeat(self, client: int) -> None:
        """Note that `client` is alive (it trains). Raises Refused: no such client."""
        with self.changed:
            self._hear(client)

    def task(self, client: int, wait_s: float = POLL_S) -> Task | None:
        """The round `client` is asked to train and has not reported, waiting up to `wait_s` for
        one; None if there is none yet.

        Raises:
            Refused: no such client, or the job has ended.
        """
        deadline = self.clock() + wait_s
        with self.changed:
            while True:
                self._hear(client)
                if self.closed:
                    raise Refused("the job has ended: no more rounds")
                if client in self.asked and client not in self.reports and self.weights is not None:
                    return Task(self.round, round_seed(self.seed, self.round - 1, client), self.weights.size)
                left = deadline - self.clock()
                if left <= 0:
                    return None
                self.changed.wait(min(left, HEARTBEAT_S))

    def round_weights(self, round_: int) -> np.ndarray:
        """The global weights (P,) float64 that round `round_` trains. Raises Refused: another round."""
        with self.changed:
            if round_ != self.round or self.weights is None:
                raise Refused(f"round {round_} is not the round being trained ({self.round})")
            return self.weights

    def report(self, client: int, round_: int, update: ClientUpdate) -> None:
        """Take `client`'s update of round `round_`.

        Raises:
            Refused: the client was not asked, the round has ended, or it reported already.
            ValueError: the update is not the size of the weights.
        """
        with self.changed:
            self._hear(client)
            if round_ != self.round or client not in self.asked:
                raise Refused(f"client {client} is not training round {round_} (the round is {self.round}, "
                              "or it ended at its deadline)")
            if client in self.reports:
                raise Refused(f"client {client} has already reported round {round_}")
            if self.weights is None or update.delta.shape != self.weights.shape:
                raise ValueError(f"an update of {update.delta.size} values; the model has {self.weights.size}")
            self.reports[client] = update
            self.changed.notify_all()

    # the server's side ---------------------------------------------------------------------
    def __call__(self, round_: int, weights: np.ndarray) -> ClientsRound:
        """Run round `round_` (from 0) on the connected clients: wait for `min_clients`, ask some,
        collect their updates until each has reported or gone silent, or until the deadline.

        Raises:
            UserError: fewer than `min_clients` were connected for `wait_timeout_s` (exit code 1).
            Closed: `close` was called meanwhile.
        """
        federated = self.federated
        with self.changed:
            waited = self.clock()
            while len(connected := self._connected()) < federated.min_clients:
                if self.closed:
                    raise Closed
                if self.clock() - waited > federated.wait_timeout_s:
                    raise UserError(f"waited {federated.wait_timeout_s:g} s for {federated.min_clients} clients; "
                                    f"{len(connected)} connected", where="federated.min_clients",
                                    fix="start more clients (`elastrain client`), or lower min_clients or raise "
                                        "wait_timeout_s", exit_code=1)
                self.changed.wait(HEARTBEAT_S)
            count = federated.clients_in_round(len(connected))
            rng = np.random.default_rng([self.seed, round_, 2**20])
            self.asked = tuple(sorted(int(c) for c in rng.choice(connected, count, replace=False)))
            self.round, self.weights, self.reports = round_ + 1, weights, {}
            self.changed.notify_all()
            deadline = self.clock() + federated.round_deadline_s
            while self.clock() < deadline:
                if self.closed:
                    raise Closed
                live = set(self._connected())
                if all(c in self.reports or c not in live for c in self.asked):
                    break
                self.changed.wait(min(HEARTBEAT_S, max(0.0, deadline - self.clock())))
            live = set(self._connected())
            reported = tuple(sorted(self.reports))
            missing = [c for c in self.asked if c not in self.reports]
            result = ClientsRound(tuple(self.reports[c] for c in reported), reported,
                                  tuple(c for c in missing if c not in live), tuple(c for c in missing if c in live),
                                  asked=self.asked, connected=len(connected))
            self.asked, self.weights = (), None   # a late report is refused
            return result

    def close(self) -> None:
        """End the job for its clients (their next request is told so) and for a round that waits."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def connected(self) -> int:
        """Clients heard from within `SILENT_S`."""
        with self.changed:
            return len(self._connected())

    def _connected(self) -> list[int]:
        now = self.clock()
        return [c for c, heard in self.heard.items() if now - heard <= SILENT_S]

    def _hear(self, client: int) -> None:
        if client not in self.heard:
            raise Refused(f"no client {client} has joined this job")
        self.heard[client] = self.clock()
