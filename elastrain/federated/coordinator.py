"""The server's side of a federated job: clients join, are asked to train a round, report an update.

`RoundCoordinator` is shared by the job's server loop (`federated.serve.serve_rounds`, one round at
a time through `__call__`) and the API's client requests (`CLIENT_CALLS`, from other threads). A
client is connected while it has been heard from (any request) within `SILENT_S`. A round starts
once `min_clients` are connected, asks `clients_in_round` of them (drawn by the job's seed and the
round), and ends when every client asked has reported or gone silent, or at the round's deadline.
Waiting for clients longer than `wait_timeout_s` fails the job with one line.

With secure aggregation a round runs the protocol of `federated.secagg` between its clients, the
server only relaying: keys (step 1) and encrypted shares (2), each within `SETUP_SHARE` of the
round's deadline, masked inputs (3; until the deadline), and the survivors' shares for unmasking
(4; `UNMASK_S` more). The server never holds an
unmasked update, only the round's sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from elastrain.errors import UserError
from elastrain.federated.secagg import (
    Advertised,
    MaskedInput,
    SharedKeys,
    Unmasking,
    advertised_from,
    advertised_json,
    protocol_bytes,
    shared_from,
    shared_json,
    summed_input,
    threshold,
    unmasked_sum,
    unmasking_from,
)
from elastrain.federated.simulate import ClientsRound, round_seed
from elastrain.federated.strategy import ClientUpdate
from elastrain.spec.federated import FederatedSpec

# A client is heard from at least every HEARTBEAT_S (its long polls and, while it trains, its
# heartbeats); one silent for SILENT_S is taken as gone. Generous, so that a busy client is not
# taken for a dead one: a round still ends at its deadline whatever the clients do.
HEARTBEAT_S = 2.0
SILENT_S = 30.0
# How long a client's request for a task (or a step of the protocol) waits before "none yet".
POLL_S = 10.0
# How long the survivors of a secure round have to send their shares for unmasking.
UNMASK_S = 30.0
# The share of a secure round's deadline that each of its first two steps (keys, shares) may take
# at most: a client asked but silent (gone, or not yet known to be) must not eat the time its
# peers need to train.
SETUP_SHARE = 0.2
# The methods a client's request may reach (through the job's driver).
CLIENT_CALLS = ("join", "heartbeat", "task", "round_weights", "report", "secagg_post", "secagg_get")
# The wire format of weights and updates (float64) and of masked inputs (uint64), little-endian.
FLOAT64, UINT64 = np.dtype("<f8"), np.dtype("<u8")


class Closed(Exception):
    """The job was ended (cancelled) while a round waited for its clients."""


class Refused(Exception):
    """A client's request that does not fit the round (HTTP 409): `str()` says why in one line."""


@dataclass(frozen=True)
class Task:
    """What a client asked in a round is told: the round (from 1), the seed of its local training,
    the size of the global weights (float64), and, under secure aggregation, the shares needed to
    unmask (else 0)."""

    round: int
    seed: int
    parameters: int
    threshold: int = 0


@dataclass
class _Protocol:
    """A secure round's protocol as the server relays it."""

    threshold: int
    advertised: dict[int, Advertised] = field(default_factory=dict)
    roster: list[Advertised] | None = None           # step 1 closed
    shares: dict[int, list[SharedKeys]] = field(default_factory=dict)
    peers: tuple[int, ...] | None = None             # step 2 closed: the clients that sent shares
    masked: dict[int, MaskedInput] = field(default_factory=dict)
    verdict: tuple[tuple[int, ...], tuple[int, ...]] | None = None   # step 3 closed: (dropped, survivors)
    reveals: dict[int, Unmasking] = field(default_factory=dict)


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
        self.protocol: _Protocol | None = None
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
        def given() -> Task | None:
            if self.closed:
                raise Refused("the job has ended: no more rounds")
            if client in self.asked and client not in self.reports and self.weights is not None and \
                    (self.protocol is None or client not in self.protocol.advertised):
                return Task(self.round, round_seed(self.seed, self.round - 1, client), self.weights.size,
                            self.protocol.threshold if self.protocol else 0)
            return None

        return self._poll(client, wait_s, given)

    def round_weights(self, client: int, round_: int) -> np.ndarray:
        """The global weights (P,) float64 that round `round_` trains, for `client` (heard from).

        Raises:
            Refused: no such client, or another round.
        """
        with self.changed:
            self._hear(client)
            if round_ != self.round or self.weights is None:
                raise Refused(f"round {round_} is not the round being trained ({self.round})")
            return self.weights

    def report(self, client: int, round_: int, body: bytes, examples: int) -> None:
        """Take `client`'s report of round `round_`: its update (float64, P values), or under
        secure aggregation its masked input (uint64, P + 1 values; `examples` is inside it).

        Raises:
            Refused: the client was not asked (or sent no shares), the round has ended, or it
                reported already.
            ValueError: the body is not the size the model needs, or holds values that are not finite.
        """
        with self.changed:
            self._asked(client, round_)
            secure = self.protocol
            if client in self.reports or (secure and client in secure.masked):
                raise Refused(f"client {client} has already reported round {round_}")
            size = self.weights.size + (1 if secure else 0)
            if len(body) != 8 * size:
                raise ValueError(f"a report of {len(body)} bytes; this round takes {size} values of 8 bytes")
            if secure:
                if secure.peers is None or client not in secure.peers or secure.verdict is not None:
                    raise Refused(f"client {client} cannot send a masked input now (it sent no shares, or the "
                                  "round stopped taking them)")
                secure.masked[client] = MaskedInput(client, np.frombuffer(body, UINT64).copy())
            else:
                delta = np.frombuffer(body, FLOAT64).copy()
                if not np.isfinite(delta).all():
                    raise ValueError("the update holds values that are not finite")
                self.reports[client] = ClientUpdate(delta, examples)
            self.changed.notify_all()

    def secagg_post(self, client: int, round_: int, step: str, payload: dict) -> None:
        """A client's message of the protocol: `keys` (its public keys), `shares` (its encrypted
        shares, one per peer: {"messages": [...]}), `reveal` (its shares for unmasking).

        Raises:
            Refused: not a secure round, not this client's, or the step has closed.
            ValueError: the payload is malformed.
        """
        with self.changed:
            protocol = self._protocol(client, round_)
            try:
                if step == "keys" and protocol.roster is None:
                    protocol.advertised[client] = advertised_from(payload, client)
                elif step == "shares" and protocol.roster is not None and protocol.peers is None and \
                        client in {a.client for a in protocol.roster}:
                    protocol.shares[client] = [shared_from(m, client) for m in payload.get("messages", [])]
                elif step == "reveal" and protocol.verdict is not None and client in protocol.verdict[1]:
                    protocol.reveals[client] = unmasking_from(payload, client)
                else:
                    raise Refused(f"the protocol's step '{step}' is not open to client {client} now")
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"a malformed '{step}' message ({type(exc).__name__})") from None
            self.changed.notify_all()

    def secagg_get(self, client: int, round_: int, step: str, wait_s: float = POLL_S) -> dict | None:
        """What a client needs for its next step, waiting up to `wait_s` for the step before to
        close; None if it has not. `roster`: every client's keys; `inbox`: the shares sent to this
        client and the clients that sent theirs; `unmask`: the dropped clients and the survivors.

        Raises:
            Refused: not a secure round, not this client's, or this client is not in the step.
        """
        if step not in ("roster", "inbox", "unmask"):
            raise Refused(f"no protocol step '{step}'")

        def ready() -> dict | None:
            protocol = self._protocol(client, round_)
            if step == "roster" and protocol.roster is not None:
                return {"roster": [advertised_json(a) for a in protocol.roster]}
            if step == "inbox" and protocol.peers is not None:
                if client not in protocol.peers:
                    raise Refused(f"client {client} sent no shares in time: it sits this round out")
                return {"messages": [shared_json(m) for sent in protocol.shares.values() for m in sent
                                     if m.to == client], "peers": list(protocol.peers)}
            if step == "unmask" and protocol.verdict is not None:
                if client not in protocol.verdict[1]:
                    raise Refused(f"client {client}'s masked input did not come in time")
                return {"dropped": list(protocol.verdict[0]), "survivors": list(protocol.verdict[1])}
            return None

        return self._poll(client, wait_s, ready)

    # the server's side ---------------------------------------------------------------------
    def __call__(self, round_: int, weights: np.ndarray) -> ClientsRound:
        """Run round `round_` (from 0) on the connected clients: wait for `min_clients`, ask some,
        collect their updates (or run the secure protocol) until each has reported or gone
        silent, or until the deadline.

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
            self.protocol = _Protocol(threshold(count, federated.min_clients)) if federated.secure_aggregation \
                else None
            self.changed.notify_all()
            deadline = self.clock() + federated.round_deadline_s
            result = self._secure_round(deadline) if self.protocol else self._plain_round(deadline)
            self.asked, self.weights, self.protocol = (), None, None   # a late report is refused
            return ClientsRound(**result, connected=len(connected))

    def _plain_round(self, deadline: float) -> dict:
        self._wait_for(lambda live: all(c in self.reports or c not in live for c in self.asked), deadline)
        return self._outcome(tuple(sorted(self.reports)), tuple(self.reports[c] for c in sorted(self.reports)))

    def _secure_round(self, deadline: float) -> dict:
        protocol = self.protocol
        step_s = SETUP_SHARE * self.federated.round_deadline_s
        self._wait_for(lambda live: all(c in protocol.advertised or c not in live for c in self.asked),
                       min(deadline, self.clock() + step_s))
        protocol.roster = [protocol.advertised[c] for c in sorted(protocol.advertised)]
        self.changed.notify_all()
        self._wait_for(lambda live: all(a.client in protocol.shares or a.client not in live
                                        for a in protocol.roster), min(deadline, self.clock() + step_s))
        protocol.peers = tuple(sorted(protocol.shares))
        self.changed.notify_all()
        self._wait_for(lambda live: all(c in protocol.masked or c not in live for c in protocol.peers), deadline)
        survivors = tuple(sorted(protocol.masked))
        dropped = tuple(c for c in protocol.peers if c not in protocol.masked)
        protocol.verdict = (dropped, survivors)
        self.changed.notify_all()
        summed = None
        if len(survivors) >= protocol.threshold:
            self._wait_for(lambda live: all(c in protocol.reveals or c not in live for c in survivors),
                           self.clock() + UNMASK_S)
            if len(protocol.reveals) >= protocol.threshold:
                total = unmasked_sum(protocol.roster, [protocol.masked[c] for c in survivors],
                                     list(protocol.reveals.values()), protocol.threshold, protocol.peers)
                summed = summed_input(total, len(survivors))
        shares = [m for sent in protocol.shares.values() for m in sent]
        sent = protocol_bytes(protocol.roster, shares, list(protocol.masked.values()), dropped,
                              list(protocol.reveals.values()))
        return {**self._outcome(survivors, ()), "secured": (summed, sent)}

    def _outcome(self, reported: tuple[int, ...], updates: tuple[ClientUpdate, ...]) -> dict:
        """The round's clients by fate: reported, dropped (gone silent), late (alive, cut)."""
        live = set(self._connected())
        missing = [c for c in self.asked if c not in reported]
        return {"updates": updates, "reported": reported, "dropped": tuple(c for c in missing if c not in live),
                "late": tuple(c for c in missing if c in live), "asked": self.asked}

    def close(self) -> None:
        """End the job for its clients (their next request is told so) and for a round that waits."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def connected(self) -> int:
        """Clients heard from within `SILENT_S`."""
        with self.changed:
            return len(self._connected())

    def _wait_for(self, done: Callable[[set[int]], bool], until: float) -> None:
        """Wait (holding the lock between wakes) until `done(connected clients)` or `until`.

        Raises:
            Closed: `close` was called meanwhile.
        """
        while self.clock() < until:
            if self.closed:
                raise Closed
            if done(set(self._connected())):
                return
            self.changed.wait(min(HEARTBEAT_S, max(0.0, until - self.clock())))

    def _poll(self, client: int, wait_s: float, ready: Callable[[], object]) -> object:
        """`ready()` once it is not None, waiting up to `wait_s`; None after that."""
        deadline = self.clock() + wait_s
        with self.changed:
            while True:
                self._hear(client)
                answer = ready()
                if answer is not None:
                    return answer
                left = deadline - self.clock()
                if left <= 0:
                    return None
                self.changed.wait(min(left, HEARTBEAT_S))

    def _asked(self, client: int, round_: int) -> None:
        self._hear(client)
        if round_ != self.round or client not in self.asked:
            raise Refused(f"client {client} is not training round {round_} (the round is {self.round}, "
                          "or it ended at its deadline)")

    def _protocol(self, client: int, round_: int) -> _Protocol:
        self._asked(client, round_)
        if self.protocol is None:
            raise Refused(f"round {round_} does not use secure aggregation")
        return self.protocol

    def _connected(self) -> list[int]:
        now = self.clock()
        return [c for c, heard in self.heard.items() if now - heard <= SILENT_S]

    def _hear(self, client: int) -> None:
        if client not in self.heard:
            raise Refused(f"no client {client} has joined this job")
        self.heard[client] = self.clock()
