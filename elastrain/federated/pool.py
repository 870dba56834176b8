"""Simulated clients trained in turns by a fixed pool of processes on Ray.

Memory does not grow with the number of clients: the data set is put in Ray's object store once
and read in place by every process, a client is only its row indices, and at most `workers`
clients train at a time (the next one asked takes the first process that is free). A process that
dies mid-round (`ray.exceptions.ActorDiedError`) drops the client it was training, and Ray starts
a new one in its place; a client still training at the round's deadline is cut, its process
replaced. The round carries on with those that reported.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from elastrain.data.dataset import Dataset
from elastrain.federated.client import client_rows, local_update
from elastrain.federated.simulate import ClientsRound, round_seed
from elastrain.federated.strategy import ClientUpdate
from elastrain.spec import JobSpec
from elastrain.spec.federated import FederatedSpec


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)
class _ClientProcess:
    """One process of the pool: trains whichever client it is handed, on that client's rows."""

    def __init__(self, spec: JobSpec, federated: FederatedSpec, shared: tuple[ray.ObjectRef, ray.ObjectRef]) -> None:
        import torch

        torch.set_num_threads(1)   # one core per process: the pool, not the kernels, uses the cores
        self.spec, self.federated = spec, federated
        self.data, self.parts = ray.get(list(shared))   # read in place from the object store

    @ray.method(max_task_retries=-1)   # retried until Ray has restarted this process
    def ready(self) -> None:
        """Return once this process is up."""

    def train(self, client: int, weights: np.ndarray, seed: int, die_midway: bool) -> ClientUpdate:
        """Client `client`'s update of `weights`; with `die_midway`, this process SIGKILLs itself
        halfway through the client's local steps instead (injected dropout)."""
        def die(step: int, steps: int) -> None:
            if step >= max(1, steps // 2):
                os.kill(os.getpid(), signal.SIGKILL)

        return local_update(self.spec, self.federated, client_rows(self.data, self.parts[client]), weights, seed,
                            on_step=die if die_midway else None)


def doomed_clients(seed: int, round_: int, asked: np.ndarray, fraction: float) -> set[int]:
    """The clients of a round that `drop_fraction` kills: round(fraction * asked) of them, drawn
    by the job's seed."""
    count = round(fraction * len(asked))
    rng = np.random.default_rng([seed, round_, 2**21])
    return {int(c) for c in rng.choice(asked, count, replace=False)} if count else set()


class ClientPool:
    """`workers` processes on the connected Ray that train a simulated federation's clients.

    Call it as `federated.simulate.TrainClients`. `drop_fraction` injects dropouts: that share of
    each round's clients (drawn by the seed) has its process SIGKILLed halfway through its local
    training. Ray must be connected (`elastic.connect.ray_session`).
    """

    def __init__(self, spec: JobSpec, federated: FederatedSpec, data: Dataset, parts: Sequence[np.ndarray],
                 workers: int, drop_fraction: float = 0.0) -> None:
        self.spec, self.federated, self.drop_fraction = spec, federated, drop_fraction
        # The data set and the split, held for the pool's life: a restarted process reads them
        # again. Passed inside a tuple, so that each process fetches them itself.
        self.shared = (ray.put(data), ray.put(list(parts)))
        self.processes = [_ClientProcess.remote(spec, federated, self.shared) for _ in range(workers)]
        self.idle = list(self.processes)
        # processes that died or were cut, each with a call that returns once Ray has restarted it
        self.restarting: dict[ray.ObjectRef, object] = {}

    def __call__(self, round_: int, asked: np.ndarray, weights: np.ndarray) -> ClientsRound:
        deadline = time.monotonic() + self.federated.round_deadline_s
        weights_ref = ray.put(weights)
        doomed = doomed_clients(self.spec.train.seed, round_, asked, self.drop_fraction)
        waiting = deque(int(c) for c in asked)
        training: dict[ray.ObjectRef, tuple[int, object]] = {}
        reported: dict[int, ClientUpdate] = {}
        dropped = []
        while waiting or training:
            while waiting and self.idle:
                client, process = waiting.popleft(), self.idle.pop()
                ref = process.train.remote(client, weights_ref, round_seed(self.spec.train.seed, round_, client),
                                           client in doomed)
                training[ref] = (client, process)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _ = ray.wait([*training, *self.restarting], num_returns=1, timeout=left)
            for ref in ready:
                if ref in self.restarting:
                    ray.get(ref)
                    self.idle.append(self.restarting.pop(ref))
                    continue
                client, process = training.pop(ref)
                try:
                    reported[client] = ray.get(ref)
                    self.idle.append(process)
                except (ActorDiedError, ActorUnavailableError):
                    dropped.append(client)
                    self._restart(process)
        for _, process in training.values():
            ray.kill(process, no_restart=False)   # a straggler's process: Ray starts a fresh one
            self._restart(process)
        order = sorted(reported)
        return ClientsRound(tuple(reported[c] for c in order), tuple(order), tuple(sorted(dropped)),
                            tuple(sorted([c for c, _ in training.values()] + list(waiting))))

    def _restart(self, process) -> None:
        """Hand `process` no client until Ray has started it again."""
        self.restarting[process.ready.remote()] = process

    def close(self) -> None:
        """Stop the pool's processes."""
        for process in self.processes:
            ray.kill(process, no_restart=True)
