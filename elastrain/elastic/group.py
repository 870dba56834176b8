"""The worker group of an elastic job: its processes on Ray and the CPUs reserved for them.

The group starts workers (new ones, warm standbys, or loaded ones from a `WorkerPool`), reserves
their CPUs, admits them once they are up, forms the collective among its members, probes members
that may be lost (by facts, see `liveness`), and kills, retires, parks or gives back the ones that
leave. It decides nothing about the job: when to grow, shrink, re-form or stop is the controller's.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from dataclasses import dataclass

import ray
import torch
from ray._private import state as ray_state
from ray.exceptions import RayError
from ray.util.placement_group import (
    NODE_ID_LABEL_KEY,
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from elastrain.data.rows import DataSource
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.liveness import Liveness, Prober
from elastrain.elastic.pool import WorkerPool
from elastrain.elastic.reports import Progress
from elastrain.elastic.worker import Worker
from elastrain.spec import JobSpec

# How long a live worker has to answer a call that does no work (`info`, `progress`) before the
# controller stops waiting for that answer. Missing it is no sign of death (a starved CPU can take
# longer): whether a member is gone or hung is decided by `liveness`, on facts and the hang timeout.
ANSWER_S = 3.0
# Errors of the group's own machinery: a member died (also by Ray's out-of-memory killer), hung
# (a timeout), or broke the collective while forming. Errors of the training code never surface
# here: `Worker.run` returns them as results.
GROUP_ERRORS = (RayError,)


@dataclass
class Member:
    """A worker process of the job."""

    actor: ray.actor.ActorHandle | None   # None until its CPUs are reserved (then it starts on their node)
    worker_id: int
    pid: int = 0
    host: str = ""
    node_id: str = ""   # the Ray node it runs on
    from_standby: bool = False   # it joins from the warm standbys, where it held no CPU
    reservation: PlacementGroup | None = None   # holds its CPUs when they are not the actor's own


class WorkerGroup:
    """The job's workers: members (in the collective, in rank order), pending ones (starting or
    waiting for their CPUs), warm standbys (loaded, holding no CPU) and parked ones (left on a
    preemption notice, holding their CPUs until their node goes).

    Args:
        spec: the job.
        checkpoint_url: where workers write durable checkpoints.
        extra_paths: folders the workers import user models from.
        trace_dir: test hook, see :class:`Worker`.
        pool: loaded workers shared with other jobs of this process (CPU jobs only): workers are
            taken from it first and given back to it when the job ends.
        gate: asked at each epoch's end whether the job stops there (see `EpochGate`).
    """

    def __init__(self, spec: JobSpec, checkpoint_url: str, extra_paths: list[str], trace_dir: str | None,
                 pool: WorkerPool | None, gate: EpochGate | None, data: DataSource | None = None) -> None:
        self.spec = spec
        # The driver's rows, put once in Ray's object store: each worker maps them instead of
        # reading and preparing the data again (None: each opens the source itself).
        self.data = ray.put(data) if data is not None else None
        self.checkpoint_url = checkpoint_url
        self.extra_paths = extra_paths
        self.trace_dir = trace_dir
        self.gate = gate
        self.maximum = spec.resources.workers.max
        self.backend = "nccl" if spec.resources.on_gpu else "gloo"
        self.actor_class = ray.remote(max_concurrency=4)(Worker)
        # Warm standbys: started and loaded workers that hold no CPU (see resources.warm_standby).
        # Then every worker's CPUs are a placement group beside its process, which holds none, so
        # that a worker leaving on a scale-in gives its CPUs back and stays loaded as a standby.
        # A GPU job has none: a process holds its GPU only if it was started with it.
        self.pool = None if spec.resources.on_gpu else pool
        self.use_standby = spec.resources.warm_standby and not spec.resources.on_gpu \
            and self.maximum > spec.resources.workers.min and self.pool is None
        # Whether every worker's CPUs are a placement group beside its process (standbys and pooled
        # workers hold none, so that they can be kept loaded without holding CPUs).
        self.reserve_apart = self.use_standby or self.pool is not None
        self.members: list[Member] = []
        self.pending: dict[int, tuple[Member, ray.ObjectRef]] = {}
        self.standbys: list[tuple[Member, ray.ObjectRef]] = []
        # Members that left on a preemption notice, with when their node goes (wall clock).
        self.parked: list[tuple[Member, float]] = []
        self.standby_loading: tuple[Member, float] | None = None   # a new standby and its start (perf_counter)
        self.next_id = 0

    # starting -----------------------------------------------------------------------------

    def grow_to(self, count: int) -> None:
        """Add pending workers until members and pending ones number `count`: warm standbys first
        (their CPUs are reserved on their node once they are loaded), else new workers."""
        resources = self.spec.resources
        while len(self.members) + len(self.pending) < count:
            pooled = self.pool.take() if self.pool is not None and not self.standbys else None
            if self.standbys:
                member, ref = self.standbys.pop(0)
                member.from_standby = True
            elif pooled is not None:   # loads this job; its CPUs are reserved on its node once it has
                member = Member(pooled, self.next_id, from_standby=True)
                ref = pooled.reload.remote(self.spec.model_dump(mode="json"), self.extra_paths, self.checkpoint_url,
                                           self.trace_dir, self.gate, self.data)
            elif self.reserve_apart:   # reserve the CPUs first; the process starts on their node
                member = Member(None, self.next_id, reservation=self._reservation())
                ref = member.reservation.ready()
            else:
                member = Member(self._start_worker(resources.cpus_per_worker, resources.gpus_per_worker,
                                                   resources.memory_bytes),
                                self.next_id)
                ref = member.actor.info.remote()
            self.next_id = max(self.next_id, member.worker_id + 1)
            self.pending[member.worker_id] = (member, ref)

    def _start_worker(self, cpus: float, gpus: float, memory: int = 0,
                      node_id: str | None = None) -> ray.actor.ActorHandle:
        """A new worker process holding `cpus`, `gpus` and `memory` bytes, on node `node_id` if given."""
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False) if node_id else "DEFAULT"
        return self.actor_class.options(num_cpus=cpus, num_gpus=gpus, memory=memory or None,
                                        scheduling_strategy=strategy).remote(
            self.spec.model_dump(mode="json"), self.extra_paths, self.checkpoint_url, self.trace_dir, self.gate,
            self.data)

    def _reservation(self, node_id: str | None = None) -> PlacementGroup:
        """A placement group holding one worker's CPUs (and memory, if it declares some), on node `node_id` if given."""
        selector = [{NODE_ID_LABEL_KEY: node_id}] if node_id else None
        resources = self.spec.resources
        bundle = {"CPU": resources.cpus_per_worker}
        if resources.memory_bytes:
            bundle["memory"] = resources.memory_bytes
        return placement_group([bundle], strategy="STRICT_PACK", bundle_label_selector=selector)

    def reserve_loaded_standbys(self) -> None:
        """Reserve CPUs for former standbys that have finished loading (without pausing the group)."""
        for worker_id, (member, ref) in list(self.pending.items()):
            if member.from_standby and member.reservation is None and ray.wait([ref], timeout=0)[0]:
                self._settle(worker_id)

    def keep_standby(self, settled: bool) -> float | None:
        """Start a warm standby if the job uses them, has none, may grow and the group is `settled`
        (formed, no resize under way: loading one takes seconds of CPU, which must not slow a start
        or a resize). Once loaded it is kept, also for replacing a lost worker.

        Returns:
            the seconds the standby being loaded took, on the call that finds it loaded; else None.
        """
        if self.use_standby and not self.standbys and settled and not self.pending \
                and len(self.members) < self.maximum:
            member = Member(self._start_worker(0, 0), self.next_id)
            self.next_id += 1
            self.standbys.append((member, member.actor.info.remote()))
            self.standby_loading = (member, time.perf_counter())
            return None
        if self.standby_loading is None:
            return None
        member, started = self.standby_loading
        ref = next((ref for m, ref in self.standbys if m is member), None)
        loaded = ref is not None and bool(ray.wait([ref], timeout=0)[0])
        if loaded or ref is None:   # loaded, or taken into the group before it was
            self.standby_loading = None
        return time.perf_counter() - started if loaded else None

    def ready_pending(self, timeout: float) -> list[Member]:
        """Pending workers whose processes are up (waiting at most `timeout` for the first)."""
        if not self.pending:
            return []
        refs = {ref: worker_id for worker_id, (_, ref) in self.pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout, fetch_local=True)
        joined = (self._settle(refs[ref]) for ref in ready)
        return [member for member in joined if member is not None]

    def any_ready(self) -> bool:
        """Whether a pending worker's call (its reservation, or its process loading) is done."""
        return any(ray.wait([ref], timeout=0)[0] for _, ref in self.pending.values())

    def _settle(self, worker_id: int) -> Member | None:
        """Take pending worker `worker_id`, whose call (its reservation, or its process loading)
        is done: the member if it can join now, with its process loaded and its CPUs held; None if
        it died (a replacement is started by the next grow_to) or still waits for one of the two
        (it stays pending)."""
        member, ref = self.pending.pop(worker_id)
        try:
            answer = ray.get(ref)
        except GROUP_ERRORS:
            self.kill(member)
            return None
        if member.actor is None:   # its CPUs are held: start its process, holding none, on their node
            node_id = placement_group_table(member.reservation)["bundles_to_node_id"][0]
            member.actor = self._start_worker(0, 0, node_id=node_id)
            self.pending[worker_id] = (member, member.actor.info.remote())
            return None
        if isinstance(answer, dict):   # Worker.info: the process is loaded
            member.pid, member.host, member.node_id = answer["pid"], answer["host"], answer["node_id"]
        if self.reserve_apart and member.reservation is None:   # a standby: reserve its CPUs on its node
            member.reservation = self._reservation(member.node_id)
            self.pending[worker_id] = (member, member.reservation.ready())
            return None
        return member

    def short_of_resources(self) -> bool:
        """Whether a pending worker waits for CPUs (or GPUs) the cluster lacks: its reservation is not
        placed (or, for a worker that holds its own, Ray has not leased it a process on a node) and
        Ray's free resources are short of one worker's. A reservation merely slow to be placed while
        the resources are free (Ray's own processes starved on a busy machine) is starting, not waiting."""
        free, asks = ray.available_resources(), self.spec.resources
        if (free.get("CPU", 0) >= asks.cpus_per_worker and free.get("GPU", 0) >= asks.gpus_per_worker
                and free.get("memory", 0) >= asks.memory_bytes):
            return False
        return any(placement_group_table(member.reservation)["state"] != "CREATED" if member.reservation is not None
                   else member.actor is not None and not _leased(member.actor)
                   for member, _ in self.pending.values())

    # the collective -----------------------------------------------------------------------

    def form(self, generation: int) -> None:
        """Form generation `generation` of the collective among the members, in rank order."""
        # Every call is bounded: a member that hangs must not hang the controller (forming and
        # the state broadcast are collectives, bounded by the hang timeout on the members' side).
        bound = self.spec.resources.hang_timeout_s + ANSWER_S
        leader = self.members[0]
        port = ray.get(leader.actor.listen.remote(), timeout=bound)
        world = len(self.members)
        nodes = len({m.node_id for m in self.members})
        ray.get([m.actor.form.remote(generation, rank, world, leader.host, port, self.backend, nodes)
                 for rank, m in enumerate(self.members)], timeout=bound)

    def load_checkpoint(self) -> dict:
        """Load the newest valid durable checkpoint into rank 0: its step and the broken ones skipped."""
        return ray.get(self.members[0].actor.load_checkpoint.remote())

    def steps(self) -> list[int]:
        """The step each member holds, by rank."""
        bound = self.spec.resources.hang_timeout_s + ANSWER_S
        return [info["step"] for info in ray.get([m.actor.info.remote() for m in self.members], timeout=bound)]

    def sync(self, source: int) -> int:
        """Give every member the state of rank `source`; the step they all hold then."""
        bound = self.spec.resources.hang_timeout_s + ANSWER_S
        return max(ray.get([m.actor.sync.remote(source) for m in self.members], timeout=bound))

    # running ------------------------------------------------------------------------------

    def run(self, pause_after: int | None) -> dict[ray.ObjectRef, Member]:
        """Start every member's `run` (pausing after step `pause_after` if given): its result -> the member."""
        return {m.actor.run.remote(pause_after): m for m in self.members}

    def progress(self) -> Progress | None:
        """Rank 0's progress report; None if it did not answer in `ANSWER_S`."""
        try:
            return ray.get(self.members[0].actor.progress.remote(), timeout=ANSWER_S)
        except GROUP_ERRORS:
            return None

    def request_pause(self, after_step: int | None = None) -> None:
        """Ask the group to stop after step `after_step`, or after its next step (see `Worker.request_pause`)."""
        self.members[0].actor.request_pause.remote(after_step=after_step)

    # leaving ------------------------------------------------------------------------------

    def lost(self, members: list[Member]) -> dict[int, Liveness]:
        """Of `members`, those that are gone or hung (see `liveness`), by worker id with their
        verdict, once each is known: a slow member is waited for, up to the hang timeout."""
        verdicts = Prober(self.spec.resources.hang_timeout_s).settle({m.worker_id: m.actor for m in members})
        return {worker_id: verdict for worker_id, verdict in verdicts.items() if verdict is not Liveness.ALIVE}

    def drop_lost(self, members: list[Member], prober: Prober | None) -> list[Liveness]:
        """Kill those of `members` that `prober` finds gone or hung (all of them, as hung, when
        `prober` is None: they outlived the group's own timeout); the verdicts, in order."""
        verdicts = [prober.verdict(m.worker_id, m.actor) if prober else Liveness.HUNG for m in members]
        for member, verdict in zip(members, verdicts, strict=True):
            if verdict in (Liveness.GONE, Liveness.HUNG):
                self.kill(member, unresponsive=True)
        return verdicts

    def kill(self, member: Member, unresponsive: bool = False) -> None:
        """End `member`'s process. An `unresponsive` one (stopped) does not act on Ray's kill
        request, so if it runs on this node it also gets SIGKILL."""
        if member.actor is not None:
            ray.kill(member.actor)
        if member.reservation is not None:
            remove_placement_group(member.reservation)
        if unresponsive and member.pid and member.node_id == ray.get_runtime_context().get_node_id():
            with contextlib.suppress(ProcessLookupError):
                os.kill(member.pid, signal.SIGKILL)

    def release(self, members: list[Member], unresponsive: bool = False) -> None:
        """Kill `members` and drop them from the group."""
        for member in members:
            self.kill(member, unresponsive)
        gone = {m.worker_id for m in members}
        self.members = [m for m in self.members if m.worker_id not in gone]

    def die(self, rank: int) -> Member:
        """Make the member of `rank` kill its own process (fault injection); that member."""
        victim = self.members[rank]
        victim.actor.die.remote()
        return victim

    def trim_to(self, desired: int) -> None:
        """Release the workers beyond `desired`: members of the highest ranks, then pending ones."""
        leaving = self.members[desired:]
        self.members = self.members[:desired]
        excess = max(0, len(self.members) + len(self.pending) - desired)
        leaving += [self.pending.pop(worker_id)[0] for worker_id in list(self.pending)[:excess]]
        for member in leaving:
            self._retire(member)

    def _retire(self, member: Member) -> None:
        """A worker leaves the job: it gives its CPUs back and stays loaded as a warm standby, if
        it has a process and the standbys are fewer than the workers the job could grow by; else
        it is killed."""
        if self.pool is not None and member.actor is not None:
            self._give_back(member)
        elif self.use_standby and member.actor is not None \
                and len(self.members) + len(self.standbys) < self.maximum:
            if member.reservation is not None:
                remove_placement_group(member.reservation)
                member.reservation = None
            self.standbys.append((member, member.actor.info.remote()))
        else:
            self.kill(member)

    def park(self, member: Member, until: float) -> None:
        """`member` leaves the group on a preemption notice, keeping its CPUs reserved until its node
        goes at wall time `until`, so that no replacement lands on that node."""
        self.members = [m for m in self.members if m.worker_id != member.worker_id]
        self.parked.append((member, until))

    def release_parked(self, now: float) -> None:
        """Let go of the members that left on a preemption notice once their node's time is up."""
        for member, until in self.parked:
            if until <= now:
                self.kill(member)
        self.parked = [(member, until) for member, until in self.parked if until > now]

    # ending -------------------------------------------------------------------------------

    def state_of(self, member: Member) -> dict:
        """`member`'s full training state."""
        return torch.load(io.BytesIO(ray.get(member.actor.state.remote())), weights_only=True)

    def shutdown(self, member: Member) -> None:
        """`member` finishes its pending checkpoint writes and leaves the collective."""
        ray.get(member.actor.shutdown.remote())

    def stop_all(self, keep: bool) -> None:
        """The job is over: its workers are killed, or, if `keep` (the group ended the job, its
        members' state is known), its members are given back to the pool."""
        kept = self.members if self.pool is not None and keep else []
        for member in kept:
            self._give_back(member)
        for member in [*self.members[len(kept):],
                       *(m for m, _ in [*self.pending.values(), *self.standbys, *self.parked])]:
            self.kill(member)
        self.members, self.pending, self.standbys, self.parked = [], {}, [], []

    def _give_back(self, member: Member) -> None:
        """`member` leaves the job's group and goes to the pool, its CPUs freed (killed if it does
        not answer or the pool is closed)."""
        try:
            ray.get(member.actor.shutdown.remote(), timeout=self.spec.resources.hang_timeout_s)
        except GROUP_ERRORS:
            self.kill(member, unresponsive=True)
            return
        if member.reservation is not None:
            remove_placement_group(member.reservation)
            member.reservation = None
        if not self.pool.give(member.actor):
            self.kill(member)


def _leased(actor: ray.actor.ActorHandle) -> bool:
    """Whether Ray has given the actor a worker process on a node (it may still be loading).

    Ray's public state API needs the dashboard, which an embedded instance does not start; the
    GCS's actor table (Ray 2.60, pinned) gives the actor's worker port once a node leased it one,
    and 0 while no node has the resources it asks for."""
    info = ray_state.actors(actor_id=actor._actor_id.hex())
    return bool(info and info["Address"]["Port"])
