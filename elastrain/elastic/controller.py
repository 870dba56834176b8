"""The controller of an elastic job: owns membership, drives the workers, records events.

Membership is a generation number. On every change (a worker joins, leaves or dies) the
surviving processes re-form the collective in place, on a fresh port, and every member takes
the state of a survivor holding the latest completed step; no process restarts and no
storage is read. A broken collective discards only the step in flight, which the new
generation redoes with the same sample indices.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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

from elastrain.elastic.chaos import ChaosAction
from elastrain.elastic.control import JobControl
from elastrain.elastic.decide import Cancel, Fail, Finish, Interrupt, Recover, Resize, Returned, decide
from elastrain.elastic.events import Event, EventLog
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.liveness import Liveness, Prober
from elastrain.elastic.pool import WorkerPool
from elastrain.elastic.reports import GroupRun, Progress, RunResult, RunStatus
from elastrain.elastic.worker import Worker
from elastrain.errors import JobInterrupted, UserError, first_line
from elastrain.spec import JobSpec

POLL_S = 0.2   # progress polling; a finished or failed run() wakes the controller at once
# After workers.min workers are up, how long to wait for the rest before starting without them
# (they join at the next step boundary once their processes are up): half the time the first ones
# took to start (workers started together are ready at about the same time, later on a loaded
# machine), within these bounds.
JOIN_GRACE_S = (2.0, 10.0)
# A worker's CPUs are reserved in milliseconds when they are free: a reservation still not made
# after this long waits for resources, and the job says so (a worker process that is merely slow to
# load, 9-17 s on a busy 2-core machine, is starting, not waiting).
WAITING_AFTER_S = 1.0
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


@dataclass
class Outcome:
    """How the job ended: final metrics and state, or the divergence message."""

    status: str                   # "done" | "failed" (diverged, or the training code raised) | "cancelled"
    state: dict
    metrics: dict | None = None
    message: str | None = None
    last_good_state: dict | None = None
    traceback: str | None = None   # where the training code raised, when it did


@dataclass(frozen=True)
class ResizeRequest:
    """A resize asked for and not yet seen through: when (wall time), at which step, from how many workers."""

    asked_at: float
    step: int
    workers: int


@dataclass
class Watch:
    """What a watch of the running group has seen so far (see `GroupRun`, what it comes to)."""

    results: dict[int, RunResult] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    hung: set[int] = field(default_factory=set)   # killed by the controller: they stopped answering

    def seen(self) -> GroupRun:
        """What the watch saw, frozen."""
        return GroupRun(dict(self.results), frozenset(self.dead), frozenset(self.hung))


class ElasticController:
    """Runs a job on 1..N Ray actors, keeping at least `workers.min` alive.

    Args:
        spec: the job.
        events: the job's event log.
        checkpoint_url: where workers write durable checkpoints.
        total_steps: the job's length (chaos actions never fire after it).
        resume: load the newest valid checkpoint before the first step.
        chaos: injected kills and resizes.
        on_progress: called with the rank-0 worker's progress report while the job runs.
        on_status: called with the changed fields of the job's status (`JobStatus`: state,
            workers, generation) as keyword arguments on every change.
        on_warning: called with a line the user should see (a broken checkpoint skipped).
        control: where cancel and resize requests come from.
        extra_paths: folders the workers import user models from.
        trace_dir: test hook, see :class:`Worker`.
        workers: how many workers to start with (default `workers.max`).
        pool: loaded workers shared with other jobs of this process (a study's trials): the job
            takes its workers from it first and gives them back when it ends (CPU jobs only).
        gate: asked at each epoch's end whether the job stops there (see `EpochGate`).
    """

    def __init__(self, spec: JobSpec, events: EventLog, checkpoint_url: str, total_steps: int, *,
                 resume: bool = False,
                 chaos: list[ChaosAction] | None = None, on_progress: Callable[[Progress], None] | None = None,
                 on_status: Callable[..., None] | None = None,
                 on_warning: Callable[[str], None] | None = None, control: JobControl | None = None,
                 extra_paths: list[str] | None = None, trace_dir: str | None = None,
                 workers: int | None = None, pool: WorkerPool | None = None, gate: EpochGate | None = None) -> None:
        self.spec = spec
        self.events = events
        self.checkpoint_url = checkpoint_url
        self.resume = resume
        self.chaos = list(chaos or [])
        self.on_progress = on_progress or (lambda report: None)
        self.on_status = on_status or (lambda **change: None)
        self.on_warning = on_warning or (lambda message: None)
        self.control = control or JobControl()
        self.extra_paths = extra_paths or []
        self.trace_dir = trace_dir
        initial, workers = workers, spec.resources.workers
        self.minimum, self.maximum = workers.min, workers.max
        self.desired = min(self.maximum, max(self.minimum, initial)) if initial else workers.max
        self.total_steps = total_steps
        self.members: list[Member] = []
        self.pending: dict[int, tuple[Member, ray.ObjectRef]] = {}
        self.generation = -1
        self.next_id = 0
        self.step = 0
        self.kill_at: float | None = None
        self.kill_generation = -1   # the generation a worker was lost from; recovery is a later one's step
        self.pause_asked = False
        self.cancel_requested = False
        self.step_at_formation = 0
        self.last_step_at = time.time()   # when the group last completed a step (wall clock)
        self.failures = 0   # group failures at `failure_step` (after a resume from a checkpoint too)
        self.failure_step = -1
        self.member_steps: list[int] = []   # each member's step when the group last re-formed
        self.backend = "nccl" if spec.resources.on_gpu else "gloo"
        self.actor_class = ray.remote(max_concurrency=4)(Worker)
        # Warm standbys: started and loaded workers that hold no CPU (see resources.warm_standby).
        # Then every worker's CPUs are a placement group beside its process, which holds none, so
        # that a worker leaving on a scale-in gives its CPUs back and stays loaded as a standby.
        # A GPU job has none: a process holds its GPU only if it was started with it.
        self.pool = None if spec.resources.on_gpu else pool
        self.gate = gate
        self.use_standby = spec.resources.warm_standby and not spec.resources.on_gpu and self.maximum > self.minimum \
            and self.pool is None
        # Whether every worker's CPUs are a placement group beside its process (standbys and pooled
        # workers hold none, so that they can be kept loaded without holding CPUs).
        self.reserve_apart = self.use_standby or self.pool is not None
        self.ended = False   # the group ended the job (done, cancelled, failed): its workers may be reused
        self.standbys: list[tuple[Member, ray.ObjectRef]] = []
        # Members that left on a preemption notice, with when their node goes (wall clock).
        self.parked: list[tuple[Member, float]] = []
        self.standby_loading: tuple[Member, float] | None = None   # a new standby and its start (perf_counter)
        self.resize_asked: ResizeRequest | None = None   # the resize request not yet carried out
        self.paused_at = 0.0                             # wall time the group last stopped to re-form
        # (the request, paused at, seconds re-forming) of a resize whose first step is not yet seen
        self.resized: tuple[ResizeRequest, float, float] | None = None

    def run(self) -> Outcome:
        """Train to the end.

        Raises:
            UserError: fewer than `workers.min` workers could be started in time, or the group
                failed `resources.retries_per_step` + 1 times without completing a step.
        """
        try:
            self._grow_to(self.desired)
            self._admit(wait_for=self.minimum)
            self._form(reason="start")
            while True:
                group = self._watch()
                returned = Returned({worker_id: result.status for worker_id, result in group.results.items()},
                                    dead=bool(group.dead), interrupt=self.control.interrupt_requested(),
                                    cancel=self.cancel_requested or group.stopped)
                match decide(returned):
                    case Fail(worker_id):
                        return self._ended(self._failed(worker_id, group.results[worker_id]))
                    case Finish():
                        return self._ended(self._finish(group))
                    case Interrupt():
                        raise JobInterrupted(f"stopped at step {self.step} for the driver's shutdown")
                    case Cancel():
                        return self._ended(self._cancelled())
                    case Recover():
                        self._recover(group)
                    case Resize():
                        self._resize(group)
        finally:
            self._stop_all()

    # membership ---------------------------------------------------------------------------

    def _grow_to(self, count: int) -> None:
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
                                           self.trace_dir, self.gate)
            elif self.reserve_apart:   # reserve the CPUs first; the process starts on their node
                member = Member(None, self.next_id, reservation=self._reservation())
                ref = member.reservation.ready()
            else:
                member = Member(self._start_worker(resources.cpus_per_worker, resources.gpus_per_worker),
                                self.next_id)
                ref = member.actor.info.remote()
            self.next_id = max(self.next_id, member.worker_id + 1)
            self.pending[member.worker_id] = (member, ref)

    def _start_worker(self, cpus: float, gpus: float, node_id: str | None = None) -> ray.actor.ActorHandle:
        """A new worker process holding `cpus` and `gpus`, on node `node_id` if given."""
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False) if node_id else "DEFAULT"
        return self.actor_class.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=strategy).remote(
            self.spec.model_dump(mode="json"), self.extra_paths, self.checkpoint_url, self.trace_dir, self.gate)

    def _reservation(self, node_id: str | None = None) -> PlacementGroup:
        """A placement group holding one worker's CPUs, on node `node_id` if given."""
        selector = [{NODE_ID_LABEL_KEY: node_id}] if node_id else None
        return placement_group([{"CPU": self.spec.resources.cpus_per_worker}], strategy="STRICT_PACK",
                               bundle_label_selector=selector)

    def _reserve_loaded_standbys(self) -> None:
        """Reserve CPUs for former standbys that have finished loading (without pausing the group)."""
        for worker_id, (member, ref) in list(self.pending.items()):
            if member.from_standby and member.reservation is None and ray.wait([ref], timeout=0)[0]:
                self._settle(worker_id)

    def _keep_standby(self) -> None:
        """Start a warm standby if the job has none and may grow: once the group has formed and no
        resize is under way (loading one takes seconds of CPU, which must not slow a start or a
        resize). Once loaded it is kept, also for replacing a lost worker."""
        settled = self.generation >= 0 and self.resize_asked is None and self.resized is None \
            and not self.pending and len(self.members) < self.maximum
        if self.use_standby and not self.standbys and settled:
            member = Member(self._start_worker(0, 0), self.next_id)
            self.next_id += 1
            self.standbys.append((member, member.actor.info.remote()))
            self.standby_loading = (member, time.perf_counter())
        elif self.standby_loading is not None:
            member, started = self.standby_loading
            ref = next((ref for m, ref in self.standbys if m is member), None)
            loaded = ref is not None and bool(ray.wait([ref], timeout=0)[0])
            if loaded:
                self.events.add(Event("standby", self.step, len(self.members), self.generation,
                                      round(time.perf_counter() - started, 4),
                                      detail={"state": "ready", "message": "a warm worker is loaded (no CPU held)"}))
            if loaded or ref is None:   # loaded, or taken into the group before it was
                self.standby_loading = None

    def _ready_pending(self, timeout: float) -> list[Member]:
        """Pending workers whose processes are up (waiting at most `timeout` for the first)."""
        if not self.pending:
            return []
        refs = {ref: worker_id for worker_id, (_, ref) in self.pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout, fetch_local=True)
        joined = (self._settle(refs[ref]) for ref in ready)
        return [member for member in joined if member is not None]

    def _settle(self, worker_id: int) -> Member | None:
        """Take pending worker `worker_id`, whose call (its reservation, or its process loading)
        is done: the member if it can join now, with its process loaded and its CPUs held; None if
        it died (a replacement is started by the next _grow_to) or still waits for one of the two
        (it stays pending)."""
        member, ref = self.pending.pop(worker_id)
        try:
            answer = ray.get(ref)
        except GROUP_ERRORS:
            self._kill(member)
            return None
        if member.actor is None:   # its CPUs are held: start its process, holding none, on their node
            node_id = placement_group_table(member.reservation)["bundles_to_node_id"][0]
            member.actor = self._start_worker(0, 0, node_id)
            self.pending[worker_id] = (member, member.actor.info.remote())
            return None
        if isinstance(answer, dict):   # Worker.info: the process is loaded
            member.pid, member.host, member.node_id = answer["pid"], answer["host"], answer["node_id"]
        if self.reserve_apart and member.reservation is None:   # a standby: reserve its CPUs on its node
            member.reservation = self._reservation(member.node_id)
            self.pending[worker_id] = (member, member.reservation.ready())
            return None
        return member

    def _short_of_resources(self) -> bool:
        """Whether a pending worker has not been given its CPUs (or GPUs) yet: its reservation is not
        placed, or, for a worker that holds its own, Ray has not leased it a process on a node."""
        return any(placement_group_table(member.reservation)["state"] != "CREATED" if member.reservation is not None
                   else member.actor is not None and not _leased(member.actor)
                   for member, _ in self.pending.values())

    def _admit(self, wait_for: int) -> None:
        """Move started workers into the membership, waiting until there are `wait_for` members."""
        began = time.monotonic()
        deadline = began + self.spec.resources.wait_timeout_s
        reported = False
        while True:
            self.members += self._ready_pending(timeout=0.1)
            if len(self.members) >= wait_for:
                if self.pending and len(self.members) < self.desired:
                    low, high = JOIN_GRACE_S
                    grace_end = time.monotonic() + min(max(low, (time.monotonic() - began) / 2), high)
                    while self.pending and time.monotonic() < grace_end:
                        self.members += self._ready_pending(timeout=0.1)
                break
            if not reported and time.monotonic() - began > min(WAITING_AFTER_S, (deadline - began) / 2) \
                    and self._short_of_resources():
                reported = True
                self.on_status(state="waiting for resources", workers=len(self.members))
                self.events.add(Event("waiting", self.step, len(self.members), self.generation,
                                      detail={"need": wait_for, "message": "waiting for resources"}))
            self._grow_to(max(self.desired, wait_for))
            if self.control.interrupt_requested():
                raise JobInterrupted(f"stopped at step {self.step} while waiting for workers")
            if time.monotonic() > deadline:
                free = ray.available_resources().get("CPU", 0)
                raise UserError(
                    f"only {len(self.members)} of the {wait_for} workers needed could be started in "
                    f"{self.spec.resources.wait_timeout_s:g} s (each asks for {self.spec.resources.cpus_per_worker:g} "
                    f"CPU; {free:g} CPU free)", where="resources.workers.min",
                    fix="lower resources.workers.min or cpus_per_worker, add nodes, or raise "
                        "resources.wait_timeout_s; checkpoints already written are kept (elastrain resume)",
                    exit_code=1)
        self._trim_to_desired()

    def _trim_to_desired(self) -> None:
        """Release the workers beyond the desired count: members of the highest ranks, then pending ones."""
        leaving = self.members[self.desired:]
        self.members = self.members[:self.desired]
        excess = max(0, len(self.members) + len(self.pending) - self.desired)
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
            self._kill(member)

    def _form(self, reason: str, lost: int = 0, detail: dict | None = None) -> None:
        """Re-form the collective among the members and give all of them the latest state.

        A member that dies or stops answering while the group forms is dropped (killed) and the
        group forms again without it; each such attempt counts as a failure of the step.
        """
        began = time.perf_counter()
        while True:
            self.generation += 1
            try:
                self._form_once()
                break
            except GROUP_ERRORS as exc:
                self._count_failure(f"forming the group: {first_line(exc)}")
                lost = self._lost(self.members)
                self._release([m for m in self.members if m.worker_id in lost], unresponsive=True)
                if len(self.members) < self.minimum:
                    self._admit(wait_for=self.minimum)
        duration = time.perf_counter() - began
        if reason == "worker_lost":
            detail = {"lost": lost, "member_steps": self.member_steps, **(detail or {})}
        self.events.add(Event(reason, self.step, len(self.members), self.generation, round(duration, 4),
                              detail=detail or {}))
        self.on_status(state="running", workers=len(self.members), generation=self.generation)

    def _form_once(self) -> None:
        # Every call is bounded: a member that hangs must not hang the controller (forming and
        # the state broadcast are collectives, bounded by the hang timeout on the members' side).
        bound = self.spec.resources.hang_timeout_s + ANSWER_S
        leader = self.members[0]
        port = ray.get(leader.actor.listen.remote(), timeout=bound)
        world = len(self.members)
        nodes = len({m.node_id for m in self.members})
        ray.get([m.actor.form.remote(self.generation, rank, world, leader.host, port, self.backend, nodes)
                 for rank, m in enumerate(self.members)], timeout=bound)
        if self.resume:
            loaded = ray.get(leader.actor.load_checkpoint.remote())
            for message in loaded["skipped"]:
                self.events.add(Event("checkpoint_skipped", self.step, world, self.generation,
                                      detail={"message": message}))
                self.on_warning(message)
            self.events.add(Event("resume", loaded["step"] or 0, world, self.generation,
                                  detail={"from_checkpoint": loaded["step"]}))
            self.resume = False
            source = 0
        else:
            steps = [info["step"] for info in ray.get([m.actor.info.remote() for m in self.members], timeout=bound)]
            self.member_steps = steps
            source = max(range(world), key=lambda rank: steps[rank])
        self.step = self.step_at_formation = max(
            ray.get([m.actor.sync.remote(source) for m in self.members], timeout=bound))

    def _lost(self, members: list[Member]) -> dict[int, Liveness]:
        """Of `members`, those that are gone or hung (see `liveness`), by worker id with their
        verdict, once each is known: a slow member is waited for, up to the hang timeout."""
        verdicts = Prober(self.spec.resources.hang_timeout_s).settle({m.worker_id: m.actor for m in members})
        return {worker_id: verdict for worker_id, verdict in verdicts.items() if verdict is not Liveness.ALIVE}

    def _kill(self, member: Member, unresponsive: bool = False) -> None:
        """End `member`'s process. An `unresponsive` one (stopped) does not act on Ray's kill
        request, so if it runs on this node it also gets SIGKILL."""
        if member.actor is not None:
            ray.kill(member.actor)
        if member.reservation is not None:
            remove_placement_group(member.reservation)
        if unresponsive and member.pid and member.node_id == ray.get_runtime_context().get_node_id():
            with contextlib.suppress(ProcessLookupError):
                os.kill(member.pid, signal.SIGKILL)

    def _release(self, members: list[Member], unresponsive: bool = False) -> None:
        """Kill `members` and drop them from the group."""
        for member in members:
            self._kill(member, unresponsive)
        gone = {m.worker_id for m in members}
        self.members = [m for m in self.members if m.worker_id not in gone]

    def _count_failure(self, what: str) -> None:
        """One more failure of the group. Failures count per step: a job that fails again at a
        step it already failed at (in place, or after resuming from an older checkpoint) has made
        no progress past it; past the job's retries, the job fails.

        Raises:
            UserError: the group failed more than `resources.retries_per_step` times at this step.
        """
        if self.step > self.failure_step:
            self.failure_step, self.failures = self.step, 0
        self.failures += 1
        retries = self.spec.resources.retries_per_step
        if self.failures > retries:
            raise UserError(
                f"the worker group failed {self.failures} times at step {self.failure_step} without getting past it "
                f"(last: {what})", where="elastic job",
                fix=f"see the job's log; resources.retries_per_step ({retries}) bounds the retries; "
                    "checkpoints already written are kept (elastrain resume)", exit_code=1)

    # running ------------------------------------------------------------------------------

    def _watch(self) -> GroupRun:
        """Run the group until every member's `run` returns; meanwhile report progress and carry
        out chaos actions and resize requests (by asking the group to pause).

        A member that is gone or hung is killed, so that the watch always ends: after a peer's step
        broke, or once the group has completed no step for `resources.hang_timeout_s`, each member
        still in its step is probed, and dropped as soon as a fact says it is gone or once it has
        been silent for the hang timeout (`liveness`). A member that answers is waited for: its
        collective returns within the hang timeout (the group's own timeout), else it is killed.
        """
        armed = self._chaos_step()   # the group pauses after this step, where the action is carried out
        running = {m.actor.run.remote(armed): m for m in self.members}
        watch = Watch()
        self.pause_asked = False
        hang_timeout = self.spec.resources.hang_timeout_s
        broken_at: float | None = None
        prober: Prober | None = None   # of the members still in their step after a break or a stall
        stalled_since = time.monotonic()
        while running:
            done, _ = ray.wait(list(running), timeout=POLL_S)
            for ref in done:
                member = running.pop(ref)
                try:
                    watch.results[member.worker_id] = result = ray.get(ref)
                    self.step = max(self.step, result.step)   # where a paused group stopped
                except GROUP_ERRORS:
                    watch.dead.add(member.worker_id)
            if any(r.status.failed for r in watch.results.values()):
                return watch.seen()   # the job fails; members still in a collective are killed with the group
            if watch.dead or any(r.status is RunStatus.BROKEN for r in watch.results.values()):
                if broken_at is None:
                    broken_at, prober = time.monotonic(), Prober(hang_timeout)
                in_step = [m for m in running.values() if m.worker_id not in watch.dead]
                self._drop_lost(watch, in_step, prober)
                if time.monotonic() - broken_at > hang_timeout + ANSWER_S:
                    self._drop_lost(watch, [m for m in in_step if m.worker_id not in watch.dead], None)
                continue
            if not running:
                continue
            before = self.step
            report = self._progress()
            if report is not None and report.step > before:
                stalled_since, prober = time.monotonic(), None
            elif time.monotonic() - stalled_since > hang_timeout:
                prober = prober or Prober(hang_timeout)
                if all(v is Liveness.ALIVE for v in self._drop_lost(watch, list(running.values()), prober)):
                    stalled_since, prober = time.monotonic(), None   # slow steps, every member answers
            if report is None:
                continue
            self._keep_standby()
            self._release_parked(time.time())
            due = self._chaos_step()
            if due is not None and due != armed:
                self.members[0].actor.request_pause.remote(after_step=due)
                armed = due
            wanted = self.control.take_scale()
            if wanted is not None:
                self._set_desired(wanted, source="request")
            if self.control.cancel_requested():
                self.cancel_requested = True
            stopping = self.cancel_requested or self.control.interrupt_requested()
            if not self.pause_asked and (stopping or self._membership_should_change()):
                self.members[0].actor.request_pause.remote()
                self.pause_asked = True
        return watch.seen()

    def _drop_lost(self, watch: Watch, members: list[Member], prober: Prober | None) -> list[Liveness]:
        """Kill those of `members` that `prober` finds gone or hung (all of them when `prober` is
        None: they outlived the group's own timeout) and add them to `watch`; the verdicts."""
        verdicts = [prober.verdict(m.worker_id, m.actor) if prober else Liveness.HUNG for m in members]
        lost = [(m, v) for m, v in zip(members, verdicts, strict=True) if v in (Liveness.GONE, Liveness.HUNG)]
        for member, verdict in lost:
            self._kill(member, unresponsive=True)
            watch.dead.add(member.worker_id)
            if verdict is Liveness.HUNG:
                watch.hung.add(member.worker_id)
        if lost:
            self.events.folder.log("dropped worker(s) " + ", ".join(f"pid {m.pid} ({v.value})" for m, v in lost))
        return verdicts

    def _progress(self) -> Progress | None:
        try:
            report = ray.get(self.members[0].actor.progress.remote(), timeout=ANSWER_S)
        except GROUP_ERRORS:
            return None
        if report.step > self.step_at_formation and self.kill_at is not None \
                and self.generation > self.kill_generation:
            self.events.add(Event("recovered", report.step, len(self.members), self.generation,
                                  round(report.last_step_at - self.kill_at, 4),
                                  detail={"from": "the last step completed before the loss to the next one"}))
            self.kill_at = None
        if self.resized is not None and report.first_step_at:
            asked, paused_at, forming_s = self.resized
            self.events.add(Event("resized", self.step_at_formation + 1, len(self.members), self.generation,
                                  round(report.first_step_at - asked.asked_at, 4),
                                  detail={"pause_s": round(report.first_step_at - paused_at, 4),
                                          "forming_s": round(forming_s, 4), "asked_step": asked.step,
                                          "from_workers": asked.workers, "asked_at": asked.asked_at,
                                          "first_step_at": report.first_step_at,
                                          "from": "the request to the first step of the resized group"}))
            self.resized = None
        if report.step > self.step:
            self.last_step_at = report.last_step_at
        self.step = report.step
        self.on_progress(report)
        return report

    def _membership_should_change(self) -> bool:
        self._grow_to(self.desired)
        self._reserve_loaded_standbys()
        ready_to_join = len(self.members) < self.desired and any(
            ray.wait([ref], timeout=0)[0] for _, ref in self.pending.values())
        return ready_to_join or len(self.members) > self.desired

    def _chaos_step(self) -> int | None:
        """The step of the next chaos action if it may be carried out once the group reaches it:
        each waits until the previous resize has taken effect and the previous loss is recovered."""
        if self.chaos and self.chaos[0].step < self.total_steps and self.resize_asked is None \
                and self.kill_at is None:
            return self.chaos[0].step
        return None

    def _fire_chaos(self) -> None:
        """The group has paused: carry out the chaos actions due by its step."""
        while (due := self._chaos_step()) is not None and due <= self.step:
            action = self.chaos.pop(0)
            if action.kind == "scale":
                self._set_desired(action.workers, source="chaos", asked_at=self.paused_at)
                continue
            rank = len(self.members) - 1 if action.rank is None else min(action.rank, len(self.members) - 1)
            victim = self.members[rank]
            self.kill_at, self.kill_generation = self.last_step_at, self.generation
            victim.actor.die.remote()
            self.events.add(Event("kill", self.step, len(self.members), self.generation,
                                  detail={"rank": rank, "pid": victim.pid, "source": "chaos"}))

    def _set_desired(self, workers: int, source: str, asked_at: float | None = None) -> None:
        """Resize to `workers` (within workers.min..max), asked at wall time `asked_at` (default now)."""
        self.desired = max(self.minimum, min(self.maximum, workers))
        if self.resize_asked is None and self.desired != len(self.members):
            self.resize_asked = ResizeRequest(asked_at or time.time(), self.step, len(self.members))
        self.events.add(Event("scale_request", self.step, len(self.members), self.generation,
                              detail={"asked": workers, "target": self.desired, "source": source}))
        self._grow_to(self.desired)

    def _resize(self, group: GroupRun) -> None:
        """The group paused: members whose node is being preempted leave, ready workers join or
        extra ones leave, then the group re-forms. Once the size asked for is reached, the first
        step of the new group ends the resize (`resized`). Chaos actions due by now are carried
        out first."""
        self.paused_at = time.time()   # the members' run() returned just after their last step
        self._progress()   # the events of the steps before the pause come before those of the resize
        before = [m.worker_id for m in self.members]
        preempted = self._let_preempted_go(group)
        if len(self.members) < self.minimum:
            self._admit(wait_for=self.minimum)
        self._fire_chaos()
        joined = self._ready_pending(timeout=0) if len(self.members) < self.desired else []
        self.members += joined
        self._trim_to_desired()
        if [m.worker_id for m in self.members] == before:
            return   # nothing changed (a joiner died meanwhile): the group goes on as it was
        began = time.perf_counter()
        if len(self.members) > len(before):
            self._form(reason="scale_out", detail={"from_standby": sum(m.from_standby for m in joined)})
        else:
            self._form(reason="scale_in", detail={"preempted": preempted} if preempted else None)
        if self.resize_asked is not None and len(self.members) == self.desired:
            self.resized = (self.resize_asked, self.paused_at, time.perf_counter() - began)
            self.resize_asked = None

    def _let_preempted_go(self, group: GroupRun) -> int:
        """Members that reported a preemption notice leave the group (event `preempted`, with the
        notice's lead time); replacements are asked for. A leaving member keeps its CPUs reserved
        until its node's end, so that no replacement lands on the node being taken. Returns how
        many left."""
        notices = group.preempted
        leaving = [m for m in self.members if m.worker_id in notices]
        if not leaving:
            return 0
        if len(leaving) == len(self.members):
            self.on_warning(f"every worker's node is being preempted (step {self.step}); the job goes on until the "
                            "nodes are gone, then resumes from its latest checkpoint")
            return 0
        self.members = [m for m in self.members if m.worker_id not in notices]
        for member in leaving:
            notice = notices[member.worker_id]
            self.parked.append((member, notice.terminate_at))
            self.events.add(Event("preempted", self.step, len(self.members), self.generation,
                                  detail={"source": notice.source, "action": notice.action,
                                          "lead_s": round(notice.terminate_at - notice.seen_at, 3),
                                          "host": member.host, "pid": member.pid}))
        self._grow_to(self.desired)
        return len(leaving)

    def _release_parked(self, now: float) -> None:
        """Let go of the members that left on a preemption notice once their node's time is up."""
        done = [member for member, until in self.parked if until <= now]
        for member in done:
            self._kill(member)
        self.parked = [(member, until) for member, until in self.parked if until > now]

    def _recover(self, group: GroupRun) -> None:
        """A member died, hung or broke the collective: re-form among the survivors, in place.
        The outage counts from the last step the group completed."""
        before = len(self.members)
        self._count_failure("; ".join(sorted(set(group.errors.values()))) or "a worker process died")
        lost = self._lost([m for m in self.members if m.worker_id not in group.dead])
        hung = group.hung | {worker_id for worker_id, verdict in lost.items() if verdict is Liveness.HUNG}
        self._release([m for m in self.members if m.worker_id in group.dead or m.worker_id in lost],
                      unresponsive=True)
        lost = before - len(self.members)
        if self.kill_at is None:
            self.kill_at, self.kill_generation = self.last_step_at, self.generation
        if not self.members:   # no replica survived: the durable checkpoint is all that is left
            self.resume = True
        self._grow_to(self.desired)   # replacements join at a later step boundary
        if len(self.members) < self.minimum:
            self._admit(wait_for=self.minimum)
        detail = {"hung": len(hung)} if hung else {}
        self._form(reason="worker_lost", lost=lost, detail=detail)

    # ending -------------------------------------------------------------------------------

    def _state_of(self, member: Member) -> dict:
        return torch.load(io.BytesIO(ray.get(member.actor.state.remote())), weights_only=True)

    def _finish(self, group: GroupRun) -> Outcome:
        """Every member finished: take the final state from any that is still alive."""
        self._progress()
        state = metrics = None
        for member in self.members:
            try:
                state = self._state_of(member)
                metrics = group.results[member.worker_id].metrics
                ray.get(member.actor.shutdown.remote())
                break
            except GROUP_ERRORS:
                continue
        if state is None:   # all died after the last step: the durable checkpoint holds the end
            raise UserError("every worker died after the last step", where="elastic job",
                            fix="run `elastrain resume JOB_ID`", exit_code=1)
        return Outcome("done", state, metrics=metrics)

    def _cancelled(self) -> Outcome:
        """The group paused on a cancel request: the job ends with the state it reached (its
        `cancelled` event, with the job's duration, is the run's final event)."""
        return Outcome("cancelled", self._state_of(self.members[0]))

    def _failed(self, worker_id: int, result: RunResult) -> Outcome:
        """A member's training diverged or its training code raised: the same inputs would do so
        again, so the job fails at once with that member's state (the last completed step)."""
        member = next(m for m in self.members if m.worker_id == worker_id)
        state = self._state_of(member)
        return Outcome("failed", state, message=result.message, last_good_state=state,
                       traceback=result.traceback)

    def _ended(self, outcome: Outcome) -> Outcome:
        self.ended = True
        return outcome

    def _stop_all(self) -> None:
        """The job is over: its workers are killed, or, once the group ended the job, given back to
        the pool (a job that raised kills them all: their state is not known)."""
        kept = self.members if self.pool is not None and self.ended else []
        for member in kept:
            self._give_back(member)
        for member in [*self.members[len(kept):],
                       *(m for m, _ in [*self.pending.values(), *self.standbys, *self.parked])]:
            self._kill(member)
        self.members, self.pending, self.standbys, self.parked = [], {}, [], []

    def _give_back(self, member: Member) -> None:
        """`member` leaves the job's group and goes to the pool, its CPUs freed (killed if it does
        not answer or the pool is closed)."""
        try:
            ray.get(member.actor.shutdown.remote(), timeout=self.spec.resources.hang_timeout_s)
        except GROUP_ERRORS:
            self._kill(member, unresponsive=True)
            return
        if member.reservation is not None:
            remove_placement_group(member.reservation)
            member.reservation = None
        if not self.pool.give(member.actor):
            self._kill(member)


def _leased(actor: ray.actor.ActorHandle) -> bool:
    """Whether Ray has given the actor a worker process on a node (it may still be loading).

    Ray's public state API needs the dashboard, which an embedded instance does not start; the
    GCS's actor table (Ray 2.60, pinned) gives the actor's worker port once a node leased it one,
    and 0 while no node has the resources it asks for."""
    info = ray_state.actors(actor_id=actor._actor_id.hex())
    return bool(info and info["Address"]["Port"])
