"""The controller of an elastic job: owns membership, drives the workers, records events.

Membership is a generation number. On every change (a worker joins, leaves or dies) the
surviving processes re-form the collective in place, on a fresh port, and every member takes
the state of a survivor holding the latest completed step; no process restarts and no
storage is read. A broken collective discards only the step in flight, which the new
generation redoes with the same sample indices.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError

from elastrain.elastic.chaos import ChaosAction
from elastrain.elastic.events import CANCEL_REQUEST_FILE, SCALE_REQUEST_FILE, Event, EventLog, read_json
from elastrain.elastic.worker import Worker
from elastrain.errors import UserError
from elastrain.spec import JobSpec

POLL_S = 0.2   # progress polling; a finished or failed run() wakes the controller at once
# After workers.min workers are up, how long to wait for the rest before starting without them
# (they join at the next step boundary once their processes are up).
JOIN_GRACE_S = 2.0
# Starting a worker process (importing torch, loading data) takes seconds; only after this long
# without enough workers does the job report that it is waiting for resources.
WAITING_AFTER_S = 10.0


@dataclass
class Member:
    """A worker process of the job."""

    actor: ray.actor.ActorHandle
    worker_id: int
    pid: int = 0
    host: str = ""
    node_id: str = ""   # the Ray node it runs on


@dataclass
class Outcome:
    """How the job ended: final metrics and state, or the divergence message."""

    status: str                   # "done" | "diverged" | "cancelled"
    state: dict
    metrics: dict | None = None
    message: str | None = None
    last_good_state: dict | None = None


@dataclass
class Watch:
    """What happened while the group was running."""

    results: dict[int, dict] = field(default_factory=dict)   # worker_id -> run() result
    dead: set[int] = field(default_factory=set)


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
        on_status: called with a status snapshot (state, workers, generation) on every change.
        on_warning: called with a line the user should see (a broken checkpoint skipped).
        scale_request_dir: a folder where `elastrain scale` drops resize requests.
        extra_paths: folders the workers import user models from.
        trace_dir: test hook, see :class:`Worker`.
        workers: how many workers to start with (default `workers.max`).
    """

    def __init__(self, spec: JobSpec, events: EventLog, checkpoint_url: str, total_steps: int, *,
                 resume: bool = False,
                 chaos: list[ChaosAction] | None = None, on_progress: Callable[[dict], None] | None = None,
                 on_status: Callable[[dict], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, scale_request_dir: Path | None = None,
                 extra_paths: list[str] | None = None, trace_dir: str | None = None,
                 workers: int | None = None) -> None:
        self.spec = spec
        self.events = events
        self.checkpoint_url = checkpoint_url
        self.resume = resume
        self.chaos = list(chaos or [])
        self.on_progress = on_progress or (lambda report: None)
        self.on_status = on_status or (lambda snapshot: None)
        self.on_warning = on_warning or (lambda message: None)
        self.scale_request_dir = scale_request_dir
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
        self.member_steps: list[int] = []   # each member's step when the group last re-formed
        self.backend = "nccl" if spec.resources.gpus_per_worker > 0 else "gloo"
        self.actor_class = ray.remote(max_concurrency=4)(Worker)

    def run(self) -> Outcome:
        """Train to the end.

        Raises:
            UserError: fewer than `workers.min` workers could be started in time.
        """
        try:
            self._grow_to(self.desired)
            self._admit(wait_for=self.minimum)
            self._form(reason="start")
            while True:
                watch = self._watch()
                broken = watch.dead or any(r["status"] == "broken" for r in watch.results.values())
                diverged = [r for r in watch.results.values() if r["status"] == "diverged"]
                if diverged:
                    return self._diverged(diverged[0]["message"])
                if not broken and all(r["status"] == "done" for r in watch.results.values()):
                    return self._finish(watch)
                if not broken and self.cancel_requested:
                    return self._cancelled()
                self._recover(watch) if broken else self._resize()
        finally:
            self._stop_all()

    # membership ---------------------------------------------------------------------------

    def _grow_to(self, count: int) -> None:
        """Start worker processes until members and pending ones number `count`."""
        resources = self.spec.resources
        while len(self.members) + len(self.pending) < count:
            actor = self.actor_class.options(num_cpus=resources.cpus_per_worker,
                                             num_gpus=resources.gpus_per_worker).remote(
                self.spec.model_dump(mode="json"), self.extra_paths, self.checkpoint_url, self.trace_dir)
            member = Member(actor, self.next_id)
            self.pending[self.next_id] = (member, actor.info.remote())
            self.next_id += 1

    def _ready_pending(self, timeout: float) -> list[Member]:
        """Pending workers whose processes are up (waiting at most `timeout` for the first)."""
        if not self.pending:
            return []
        refs = {ref: worker_id for worker_id, (_, ref) in self.pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout, fetch_local=True)
        joined = []
        for ref in ready:
            member, _ = self.pending.pop(refs[ref])
            try:
                info = ray.get(ref)
            except RayActorError:
                continue   # died while starting; a replacement is started by the next _grow_to
            member.pid, member.host, member.node_id = info["pid"], info["host"], info["node_id"]
            joined.append(member)
        return joined

    def _admit(self, wait_for: int) -> None:
        """Move started workers into the membership, waiting until there are `wait_for` members."""
        began = time.monotonic()
        deadline = began + self.spec.resources.wait_timeout_s
        reported = False
        while True:
            self.members += self._ready_pending(timeout=0.1)
            if len(self.members) >= wait_for:
                if self.pending and len(self.members) < self.desired:
                    grace_end = time.monotonic() + JOIN_GRACE_S
                    while self.pending and time.monotonic() < grace_end:
                        self.members += self._ready_pending(timeout=0.1)
                break
            if not reported and time.monotonic() - began > min(WAITING_AFTER_S, (deadline - began) / 2):
                reported = True
                self.on_status({"state": "waiting for resources", "workers": len(self.members)})
                self.events.add(Event("waiting", self.step, len(self.members), self.generation,
                                      detail={"need": wait_for, "message": "waiting for resources"}))
            self._grow_to(max(self.desired, wait_for))
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
        for member in self.members[self.desired:]:
            ray.kill(member.actor)
        del self.members[self.desired:]
        for worker_id in list(self.pending)[: max(0, len(self.members) + len(self.pending) - self.desired)]:
            ray.kill(self.pending.pop(worker_id)[0].actor)

    def _form(self, reason: str, lost: int = 0) -> None:
        """Re-form the collective among the members and give all of them the latest state."""
        began = time.perf_counter()
        while True:
            self.generation += 1
            try:
                self._form_once()
                break
            except RayActorError:
                self.members = [m for m in self.members if self._alive(m)]
                if len(self.members) < self.minimum:
                    self._admit(wait_for=self.minimum)
        duration = time.perf_counter() - began
        detail = {"lost": lost, "member_steps": self.member_steps} if reason == "worker_lost" else {}
        self.events.add(Event(reason, self.step, len(self.members), self.generation, round(duration, 4),
                              detail=detail))
        self.on_status({"state": "running", "workers": len(self.members), "generation": self.generation})

    def _form_once(self) -> None:
        leader = self.members[0]
        port = ray.get(leader.actor.free_port.remote())
        world = len(self.members)
        nodes = len({m.node_id for m in self.members})
        ray.get([m.actor.form.remote(self.generation, rank, world, leader.host, port, self.backend, nodes)
                 for rank, m in enumerate(self.members)])
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
            steps = [info["step"] for info in ray.get([m.actor.info.remote() for m in self.members])]
            self.member_steps = steps
            source = max(range(world), key=lambda rank: steps[rank])
        self.step = self.step_at_formation = max(ray.get([m.actor.sync.remote(source) for m in self.members]))

    def _alive(self, member: Member) -> bool:
        try:
            ray.get(member.actor.info.remote(), timeout=5)
            return True
        except (RayActorError, GetTimeoutError):
            return False

    # running ------------------------------------------------------------------------------

    def _watch(self) -> Watch:
        """Run the group until every member's `run` returns; meanwhile report progress and carry
        out chaos actions and resize requests (by asking the group to pause)."""
        running = {m.actor.run.remote(): m for m in self.members}
        watch = Watch()
        self.pause_asked = False
        while running:
            done, _ = ray.wait(list(running), timeout=POLL_S)
            for ref in done:
                member = running.pop(ref)
                try:
                    watch.results[member.worker_id] = ray.get(ref)
                except RayActorError:
                    watch.dead.add(member.worker_id)
            if watch.dead or not running:
                continue
            report = self._progress()
            if report is None:
                continue
            self._fire_chaos(report["step"])
            self._read_scale_request()
            if self.scale_request_dir is not None and (self.scale_request_dir / CANCEL_REQUEST_FILE).exists():
                self.cancel_requested = True
            if not self.pause_asked and (self.cancel_requested or self._membership_should_change()):
                self.members[0].actor.request_pause.remote()
                self.pause_asked = True
        return watch

    def _progress(self) -> dict | None:
        try:
            report = ray.get(self.members[0].actor.progress.remote(), timeout=2)
        except (RayActorError, GetTimeoutError):
            return None
        if self.kill_at is not None and self.generation > self.kill_generation \
                and report["step"] > self.step_at_formation:
            self.events.add(Event("recovered", report["step"], len(self.members), self.generation,
                                  round(report["last_step_at"] - self.kill_at, 4),
                                  detail={"from": "the loss of a worker to the next completed step"}))
            self.kill_at = None
        self.step = report["step"]
        self.on_progress(report)
        return report

    def _membership_should_change(self) -> bool:
        self._grow_to(self.desired)
        ready_to_join = len(self.members) < self.desired and any(
            ray.wait([ref], timeout=0)[0] for _, ref in self.pending.values())
        return ready_to_join or len(self.members) > self.desired

    def _fire_chaos(self, step: int) -> None:
        """Carry out due actions; each waits until the previous resize has taken effect."""
        while self.chaos and self.chaos[0].step <= step < self.total_steps and not self.pause_asked \
                and len(self.members) == self.desired:
            action = self.chaos.pop(0)
            if action.kind == "scale":
                self._set_desired(action.workers, source="chaos")
                continue
            rank = len(self.members) - 1 if action.rank is None else min(action.rank, len(self.members) - 1)
            victim = self.members[rank]
            self.kill_at, self.kill_generation = time.time(), self.generation
            victim.actor.die.remote()
            self.events.add(Event("kill", step, len(self.members), self.generation,
                                  detail={"rank": rank, "pid": victim.pid, "source": "chaos"}))

    def _read_scale_request(self) -> None:
        if self.scale_request_dir is None:
            return
        path = self.scale_request_dir / SCALE_REQUEST_FILE
        request = read_json(path) if path.exists() else None
        if request is not None:
            path.unlink(missing_ok=True)
            self._set_desired(int(request["workers"]), source="request")

    def _set_desired(self, workers: int, source: str) -> None:
        self.desired = max(self.minimum, min(self.maximum, workers))
        self.events.add(Event("scale_request", self.step, len(self.members), self.generation,
                              detail={"asked": workers, "target": self.desired, "source": source}))
        self._grow_to(self.desired)

    def _resize(self) -> None:
        """The group paused: let ready workers join or extra ones leave, then re-form."""
        before = len(self.members)
        if len(self.members) < self.desired:
            self.members += self._ready_pending(timeout=0)
        self._trim_to_desired()
        self._form(reason="scale_out" if len(self.members) > before else "scale_in")

    def _recover(self, watch: Watch) -> None:
        """A member died or the collective broke: re-form among the survivors, in place."""
        before = len(self.members)
        self.members = [m for m in self.members if m.worker_id not in watch.dead and self._alive(m)]
        lost = before - len(self.members)
        if self.kill_at is None:
            self.kill_at, self.kill_generation = time.time(), self.generation
        if not self.members:   # no replica survived: the durable checkpoint is all that is left
            self.resume = True
        self._grow_to(self.desired)   # replacements join at a later step boundary
        if len(self.members) < self.minimum:
            self._admit(wait_for=self.minimum)
        self._form(reason="worker_lost", lost=lost)

    # ending -------------------------------------------------------------------------------

    def _state_of(self, member: Member) -> dict:
        return torch.load(io.BytesIO(ray.get(member.actor.state.remote())), weights_only=True)

    def _finish(self, watch: Watch) -> Outcome:
        """Every member finished: take the final state from any that is still alive."""
        self._progress()
        state = metrics = None
        for member in self.members:
            try:
                state = self._state_of(member)
                metrics = watch.results[member.worker_id]["metrics"]
                ray.get(member.actor.shutdown.remote())
                break
            except RayActorError:
                continue
        if state is None:   # all died after the last step: the durable checkpoint holds the end
            raise UserError("every worker died after the last step", where="elastic job",
                            fix="run `elastrain resume JOB_ID`", exit_code=1)
        return Outcome("done", state, metrics=metrics)

    def _cancelled(self) -> Outcome:
        """The group paused on a cancel request: the job ends with the state it reached."""
        self.events.add(Event("cancelled", self.step, len(self.members), self.generation))
        return Outcome("cancelled", self._state_of(self.members[0]))

    def _diverged(self, message: str) -> Outcome:
        state = self._state_of(self.members[0])
        return Outcome("diverged", state, message=message, last_good_state=state)

    def _stop_all(self) -> None:
        for member in [*self.members, *(m for m, _ in self.pending.values())]:
            ray.kill(member.actor)
        self.members, self.pending = [], {}

