"""Is a worker gone, hung, or only slow? Decided by facts, never by how fast a starved CPU answers.

On an over-subscribed machine (3 workers on 2 cores) a healthy worker can take seconds to answer
a call; on a lost host it never will. Taking a missed short deadline for death kills healthy
workers. So a worker is *gone* only on a fact: Ray says its actor or its node is dead, or its
process's port refuses connections or its host does not answer a TCP handshake (the kernel
completes one for a live process however starved it is). It is *hung* only after it has left a
probe unanswered for the job's `resources.hang_timeout_s`. Anything else is slow, and waited for.
"""

from __future__ import annotations

import enum
import socket
import time
from dataclasses import dataclass

import ray
from ray._private import state as ray_state
from ray.exceptions import RayError

# How long a TCP handshake with a worker's host may take before the host counts as unreachable:
# long enough for one lost SYN to be sent again (Linux retries after 1 s).
CONNECT_S = 2.0


class Liveness(enum.Enum):
    """What is known of a worker."""

    ALIVE = "alive"       # it answered
    SLOW = "slow"         # no answer yet, but nothing says it is gone: wait
    GONE = "gone"         # a fact says its process or host is gone
    HUNG = "hung"         # alive by every fact, but silent for the hang timeout: wedged or stopped


class Endpoint(enum.Enum):
    """What a TCP connection to a worker's process port found."""

    ACCEPTS = "accepts"
    REFUSED = "refused"           # the host answered, no process listens: the process is gone
    UNREACHABLE = "unreachable"   # no handshake within CONNECT_S, or no route: the host is gone
    UNKNOWN = "unknown"           # Ray has not said where the process is


@dataclass(frozen=True)
class Facts:
    """What was found out about one worker, `silent_s` seconds after it was asked to answer."""

    answered: bool           # its probe returned
    probe_failed: bool       # its probe raised: Ray says the actor died
    actor_dead: bool         # Ray's actor table says DEAD
    node_dead: bool          # Ray's node table says its node is not alive
    endpoint: Endpoint
    silent_s: float


def judge(facts: Facts, hang_timeout_s: float) -> Liveness:
    """The verdict on one worker (pure).

    Args:
        facts: what is known of it.
        hang_timeout_s: how long a worker every fact says is alive may stay silent before it is
            taken for hung (`resources.hang_timeout_s`).
    """
    if facts.probe_failed or facts.actor_dead or facts.node_dead \
            or facts.endpoint in (Endpoint.REFUSED, Endpoint.UNREACHABLE):
        return Liveness.GONE
    if facts.answered:
        return Liveness.ALIVE
    if facts.silent_s >= hang_timeout_s:
        return Liveness.HUNG
    return Liveness.SLOW


def connect(address: tuple[str, int] | None, timeout_s: float = CONNECT_S) -> Endpoint:
    """Try a TCP handshake with `address` (host, port); what it found."""
    if address is None:
        return Endpoint.UNKNOWN
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return Endpoint.ACCEPTS
    except ConnectionRefusedError:
        return Endpoint.REFUSED
    except (TimeoutError, OSError):   # no handshake in time, no route to the host, network unreachable
        return Endpoint.UNREACHABLE


def ray_view(actor: ray.actor.ActorHandle) -> tuple[bool, bool, tuple[str, int] | None]:
    """Ray's view of `actor`: (actor dead, node dead, its process's (address, port) or None).

    Ray's public state API needs the dashboard, which an embedded instance does not start; the
    GCS's actor and node tables (Ray 2.60, pinned) give the same facts."""
    info = ray_state.actors(actor_id=actor._actor_id.hex())
    if not info:
        return False, False, None
    where = info.get("Address") or {}
    address = (where["IPAddress"], int(where["Port"])) if where.get("Port") else None
    node = where.get("NodeID")
    node_dead = bool(node) and any(n["NodeID"] == node and not n["Alive"] for n in ray.nodes())
    return info.get("State") == "DEAD", node_dead, address


class Prober:
    """Liveness probes of workers (each a call that does no work, served beside the training
    thread), judged by `judge` with the facts gathered when a probe has not answered.

    Args:
        hang_timeout_s: see `judge`.
    """

    def __init__(self, hang_timeout_s: float) -> None:
        self.hang_timeout_s = hang_timeout_s
        self.probes: dict[int, tuple[ray.ObjectRef, float]] = {}   # worker id -> (probe, sent at monotonic)

    def verdict(self, worker_id: int, actor: ray.actor.ActorHandle) -> Liveness:
        """The verdict on worker `worker_id` now (its probe is sent on the first call)."""
        if worker_id not in self.probes:
            self.probes[worker_id] = (actor.info.remote(), time.monotonic())
        probe, sent = self.probes[worker_id]
        answered = probe_failed = False
        if ray.wait([probe], timeout=0)[0]:
            try:
                ray.get(probe)
                answered = True
            except RayError:
                probe_failed = True
        if answered or probe_failed:
            return judge(Facts(answered, probe_failed, False, False, Endpoint.UNKNOWN, 0.0), self.hang_timeout_s)
        actor_dead, node_dead, address = ray_view(actor)
        endpoint = Endpoint.UNKNOWN if actor_dead or node_dead else connect(address)
        return judge(Facts(False, False, actor_dead, node_dead, endpoint, time.monotonic() - sent), self.hang_timeout_s)

    def settle(self, workers: dict[int, ray.actor.ActorHandle], poll_s: float = 0.05) -> dict[int, Liveness]:
        """Verdicts on `workers` (worker id -> actor) once none is SLOW: within the hang timeout."""
        verdicts: dict[int, Liveness] = {}
        while True:
            for worker_id, actor in workers.items():
                if verdicts.get(worker_id, Liveness.SLOW) is Liveness.SLOW:
                    verdicts[worker_id] = self.verdict(worker_id, actor)
            if Liveness.SLOW not in verdicts.values():
                return verdicts
            time.sleep(poll_s)
