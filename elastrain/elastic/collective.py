"""The collective of an elastic worker group: torch.distributed, re-formed in place on every
membership change (gloo on CPU, NCCL when the workers train on GPUs, on their CUDA tensors)."""

from __future__ import annotations

import io
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from elastrain.errors import first_line
from elastrain.train.learner import PeerLost


def free_port() -> int:
    """A TCP port free on this host right now (for a group's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def bind_to_address(address: str) -> str | None:
    """Make gloo groups formed later in this process use the network interface that holds
    `address` (the node's address in the cluster), unless GLOO_SOCKET_IFNAME already names one.
    Returns the interface, or None when no interface holds the address (gloo then resolves the
    host name, as it would have).

    Without it gloo binds to what the host name resolves to, which on many hosts is a loopback
    address (Debian maps it to 127.0.1.1; this machine to 127.0.0.1): peers on other hosts are
    then told to connect to 127.x and the group never forms.
    """
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return os.environ["GLOO_SOCKET_IFNAME"]
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(entry.address.split("%")[0] == address for entry in addresses):
            os.environ["GLOO_SOCKET_IFNAME"] = name
            return name
    return None


class GroupCollective:
    """Sums tensors over the current generation of the worker group."""

    def __init__(self) -> None:
        self.rank = 0
        self.world_size = 1
        self.generation = -1
        self.backend = "gloo"
        self.master = "127.0.0.1"   # the address of the current generation's rank 0
        self.rendezvous: dist.TCPStore | None = None   # the store of the group this member leads

    def listen(self, host: str, timeout_s: float) -> int:
        """Leave any previous group and open the rendezvous of the next one, which this member
        will lead as rank 0; returns its port on `host`. Opening it before any member connects
        spares them the client's connection retries (up to a second each on a fresh process)."""
        self.leave()
        self.rendezvous = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False,
                                        timeout=timedelta(seconds=timeout_s))
        return self.rendezvous.port

    def form(self, generation: int, rank: int, world_size: int, master: str, port: int, backend: str,
             timeout_s: float) -> None:
        """Leave any previous group and join generation `generation` (blocks until all members join)
        through the rendezvous its rank 0 opened with :meth:`listen` at `master`:`port`.

        `timeout_s` bounds every later collective: a peer silent for that long (a stopped or wedged
        process) makes the operation raise :class:`PeerLost`; a SIGKILLed peer is noticed at once
        (its sockets close).
        """
        timeout = timedelta(seconds=timeout_s)
        if rank == 0:
            store = self.rendezvous
        else:
            self.leave()
            store = dist.TCPStore(master, port, is_master=False, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        self.rank, self.world_size, self.generation, self.backend = rank, world_size, generation, backend
        self.master = master

    def leave(self) -> None:
        """Leave the current group, if any (a broken group is torn down as well)."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        """Replace `tensor` in place by its sum over the group (a CUDA tensor with NCCL: it is
        reduced where it lies, never copied through the host).

        Raises:
            PeerLost: the group broke (whatever the backend raised is its cause).
        """
        if self.world_size == 1:
            return
        try:
            dist.all_reduce(tensor)
        except Exception as exc:
            raise PeerLost(first_line(exc)) from exc

    def broadcast_state(self, state: dict | None, source: int) -> dict:
        """`state` of rank `source`, delivered to every member (others pass None)."""
        if self.world_size == 1:
            assert state is not None
            return state
        if self.rank == source:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
            size = torch.tensor([payload.numel()], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        self._broadcast(size, source)
        if self.rank != source:
            payload = torch.empty(int(size), dtype=torch.uint8)
        self._broadcast(payload, source)
        if self.rank == source:
            return state
        return torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=True)

    def _broadcast(self, tensor: torch.Tensor, source: int) -> None:
        # Serialized state lives on the host; NCCL moves only CUDA tensors (once per formation).
        if self.backend == "nccl":
            on_device = tensor.cuda()
            dist.broadcast(on_device, source)
            tensor.copy_(on_device.cpu())
        else:
            dist.broadcast(tensor, source)
