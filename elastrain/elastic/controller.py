"""The controller of an elastic job: the control loop that drives its worker group and records events.

Membership is a generation number. On every change (a worker joins, leaves or dies) the
surviving processes re-form the collective in place, on a fresh port, and every member takes
the state of a survivor holding the latest completed step; no process restarts and no
storage is read. A broken collective discards only the step in flight, which the new
generation redoes with the same sample indices.

The processes themselves (starting, reserving, probing, killing them) are the `WorkerGroup`'s;
what to do once the group's runs have returned is the pure `decide`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from elastrain.data.rows import DataSource
from elastrain.elastic.chaos import ChaosAction
from elastrain.elastic.control import JobControl
from elastrain.elastic.decide import Cancel, Fail, Finish, Interrupt, Recover, Resize, Returned, decide
from elastrain.elastic.events import Event, EventLog
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.group import ANSWER_S, GROUP_ERRORS, Member, WorkerGroup
from elastrain.elastic.liveness import Liveness, Prober
from elastrain.elastic.phase import Phase, advance
from elastrain.elastic.pool import WorkerPool
from elastrain.elastic.reports import GroupRun, Progress, RunResult, RunStatus
from elastrain.errors import JobInterrupted, UserError, first_line
from elastrain.runs import JobState
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


@dataclass
class Outcome:
    """How the job ended: final metrics and state, or the divergence message."""

    status: JobState   # SUCCEEDED (its last step taken), FAILED (diverged, or the training code raised), CANCELLED
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
        data: the job's data as the driver opened it, handed to every worker the job starts
            (`elastrain.data.rows.handed_over`); None: each worker opens the spec's source.
    """

    def __init__(self, spec: JobSpec, events: EventLog, checkpoint_url: str, total_steps: int, *,
                 resume: bool = False,
                 chaos: list[ChaosAction] | None = None, on_progress: Callable[[Progress], None] | None = None,
                 on_status: Callable[..., None] | None = None,
                 on_warning: Callable[[str], None] | None = None, control: JobControl | None = None,
                 extra_paths: list[str] | None = None, trace_dir: str | None = None,
                 workers: int | None = None, pool: WorkerPool | None = None, gate: EpochGate | None = None,
                 data: DataSource | None = None) -> None:
        self.spec = spec
        self.events = events
        self.resume = resume
        self.chaos = list(chaos or [])
        self.on_progress = on_progress or (lambda report: None)
        self.on_status = on_status or (lambda **change: None)
        self.on_warning = on_warning or (lambda message: None)
        self.control = control or JobControl()
        initial, workers = workers, spec.resources.workers
        self.minimum, self.maximum = workers.min, workers.max
        self.desired = min(self.maximum, max(self.minimum, initial)) if initial else workers.max
        self.total_steps = total_steps
        self.group = WorkerGroup(spec, checkpoint_url, extra_paths or [], trace_dir, pool, gate, data)
        self.generation = -1
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
        self.phase = Phase.STARTING
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
            self.group.grow_to(self.desired)
            self._admit(wait_for=self.minimum)
            self._form(reason="start")
            self._enter(Phase.RUNNING)
            while True:
                ran = self._watch()
                returned = Returned({worker_id: result.status for worker_id, result in ran.results.items()},
                                    dead=bool(ran.dead), interrupt=self.control.interrupt_requested(),
                                    cancel=self.cancel_requested or ran.stopped)
                match decide(returned):
                    case Fail(worker_id):
                        return self._end(Phase.FAILED, self._failed(worker_id, ran.results[worker_id]))
                    case Finish():
                        return self._end(Phase.FINISHED, self._finish(ran))
                    case Interrupt():
                        self._enter(Phase.INTERRUPTED)
                        raise JobInterrupted(f"stopped at step {self.step} for the driver's shutdown")
                    case Cancel():
                        return self._end(Phase.CANCELLED, self._cancelled())
                    case Recover():
                        self._enter(Phase.RECOVERING)
                        self._recover(ran)
                        self._enter(Phase.RUNNING)
                    case Resize():
                        self._enter(Phase.RESIZING)
                        self._resize(ran)
                        self._enter(Phase.RUNNING)
        finally:
            self.group.stop_all(keep=self.phase.ended_by_group)

    def _enter(self, phase: Phase) -> None:
        """Move the loop to `phase` (see `phase.TRANSITIONS`)."""
        self.phase = advance(self.phase, phase)

    def _end(self, phase: Phase, outcome: Outcome) -> Outcome:
        """The group ended the job in `phase` with `outcome`: its workers may be reused."""
        self._enter(phase)
        return outcome

    # membership ---------------------------------------------------------------------------

    def _keep_standby(self) -> None:
        """Keep a warm standby loaded once the group has formed and no resize is under way (see
        `WorkerGroup.keep_standby`); say when one is ready."""
        settled = self.generation >= 0 and self.resize_asked is None and self.resized is None
        loaded_s = self.group.keep_standby(settled)
        if loaded_s is not None:
            self.events.add(Event("standby", self.step, len(self.group.members), self.generation, round(loaded_s, 4),
                                  detail={"state": "ready", "message": "a warm worker is loaded (no CPU held)"}))

    def _admit(self, wait_for: int) -> None:
        """Move started workers into the membership, waiting until there are `wait_for` members."""
        group = self.group
        began = time.monotonic()
        deadline = began + self.spec.resources.wait_timeout_s
        reported = False
        while True:
            group.members += group.ready_pending(timeout=0.1)
            if len(group.members) >= wait_for:
                if group.pending and len(group.members) < self.desired:
                    low, high = JOIN_GRACE_S
                    grace_end = time.monotonic() + min(max(low, (time.monotonic() - began) / 2), high)
                    while group.pending and time.monotonic() < grace_end:
                        group.members += group.ready_pending(timeout=0.1)
                break
            if not reported and time.monotonic() - began > min(WAITING_AFTER_S, (deadline - began) / 2) \
                    and group.short_of_resources():
                reported = True
                self.on_status(state=JobState.WAITING, workers=len(group.members))
                self.events.add(Event("waiting", self.step, len(group.members), self.generation,
                                      detail={"need": wait_for, "message": str(JobState.WAITING)}))
            group.grow_to(max(self.desired, wait_for))
            if self.control.interrupt_requested():
                self._enter(Phase.INTERRUPTED)
                raise JobInterrupted(f"stopped at step {self.step} while waiting for workers")
            if time.monotonic() > deadline:
                free, asks = ray.available_resources(), self.spec.resources
                memory = (f" and {asks.memory_per_worker:,.0f} MiB; {free.get('memory', 0) / 2**20:,.0f} MiB free"
                          if asks.memory_bytes else "")
                raise UserError(
                    f"only {len(group.members)} of the {wait_for} workers needed could be started in "
                    f"{asks.wait_timeout_s:g} s (each asks for {asks.cpus_per_worker:g} "
                    f"CPU{memory}; {free.get('CPU', 0):g} CPU free)", where="resources.workers.min",
                    fix="lower resources.workers.min, cpus_per_worker or memory_per_worker, add nodes, or raise "
                        "resources.wait_timeout_s; checkpoints already written are kept (elastrain resume)",
                    exit_code=1)
        group.trim_to(self.desired)

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
                gone = self.group.lost(self.group.members)
                self.group.release([m for m in self.group.members if m.worker_id in gone], unresponsive=True)
                if len(self.group.members) < self.minimum:
                    self._admit(wait_for=self.minimum)
        duration = time.perf_counter() - began
        if reason == "worker_lost":
            detail = {"lost": lost, "member_steps": self.member_steps, **(detail or {})}
        self.events.add(Event(reason, self.step, len(self.group.members), self.generation, round(duration, 4),
                              detail=detail or {}))
        self.on_status(state=JobState.RUNNING, workers=len(self.group.members), generation=self.generation)

    def _form_once(self) -> None:
        self.group.form(self.generation)
        world = len(self.group.members)
        if self.resume:
            loaded = self.group.load_checkpoint()
            for message in loaded["skipped"]:
                self.events.add(Event("checkpoint_skipped", self.step, world, self.generation,
                                      detail={"message": message}))
                self.on_warning(message)
            self.events.add(Event("resume", loaded["step"] or 0, world, self.generation,
                                  detail={"from_checkpoint": loaded["step"]}))
            self.resume = False
            source = 0
        else:
            steps = self.group.steps()
            self.member_steps = steps
            source = max(range(world), key=lambda rank: steps[rank])
        self.step = self.step_at_formation = self.group.sync(source)

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
        running = self.group.run(armed)
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
            self.group.release_parked(time.time())
            due = self._chaos_step()
            if due is not None and due != armed:
                self.group.request_pause(after_step=due)
                armed = due
            wanted = self.control.take_scale()
            if wanted is not None:
                self._set_desired(wanted, source="request")
            if self.control.cancel_requested():
                self.cancel_requested = True
            stopping = self.cancel_requested or self.control.interrupt_requested()
            if not self.pause_asked and (stopping or self._membership_should_change()):
                self.group.request_pause()
                self.pause_asked = True
        return watch.seen()

    def _drop_lost(self, watch: Watch, members: list[Member], prober: Prober | None) -> list[Liveness]:
        """Kill those of `members` that `prober` finds gone or hung (all of them when `prober` is
        None: they outlived the group's own timeout) and add them to `watch`; the verdicts."""
        verdicts = self.group.drop_lost(members, prober)
        lost = [(m, v) for m, v in zip(members, verdicts, strict=True) if v in (Liveness.GONE, Liveness.HUNG)]
        for member, verdict in lost:
            watch.dead.add(member.worker_id)
            if verdict is Liveness.HUNG:
                watch.hung.add(member.worker_id)
        if lost:
            self.events.folder.log("dropped worker(s) " + ", ".join(f"pid {m.pid} ({v.value})" for m, v in lost))
        return verdicts

    def _progress(self) -> Progress | None:
        report = self.group.progress()
        if report is None:
            return None
        if report.step > self.step_at_formation and self.kill_at is not None \
                and self.generation > self.kill_generation:
            self.events.add(Event("recovered", report.step, len(self.group.members), self.generation,
                                  round(report.last_step_at - self.kill_at, 4),
                                  detail={"from": "the last step completed before the loss to the next one"}))
            self.kill_at = None
        if self.resized is not None and report.first_step_at:
            asked, paused_at, forming_s = self.resized
            self.events.add(Event("resized", self.step_at_formation + 1, len(self.group.members), self.generation,
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
        self.group.grow_to(self.desired)
        self.group.reserve_loaded_standbys()
        ready_to_join = len(self.group.members) < self.desired and self.group.any_ready()
        return ready_to_join or len(self.group.members) > self.desired

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
            rank = len(self.group.members) - 1 if action.rank is None else min(action.rank, len(self.group.members) - 1)
            self.kill_at, self.kill_generation = self.last_step_at, self.generation
            victim = self.group.die(rank)
            self.events.add(Event("kill", self.step, len(self.group.members), self.generation,
                                  detail={"rank": rank, "pid": victim.pid, "source": "chaos"}))

    def _set_desired(self, workers: int, source: str, asked_at: float | None = None) -> None:
        """Resize to `workers` (within workers.min..max), asked at wall time `asked_at` (default now)."""
        self.desired = max(self.minimum, min(self.maximum, workers))
        if self.resize_asked is None and self.desired != len(self.group.members):
            self.resize_asked = ResizeRequest(asked_at or time.time(), self.step, len(self.group.members))
        self.events.add(Event("scale_request", self.step, len(self.group.members), self.generation,
                              detail={"asked": workers, "target": self.desired, "source": source}))
        self.group.grow_to(self.desired)

    def _resize(self, ran: GroupRun) -> None:
        """The group paused: members whose node is being preempted leave, ready workers join or
        extra ones leave, then the group re-forms. Once the size asked for is reached, the first
        step of the new group ends the resize (`resized`). Chaos actions due by now are carried
        out first."""
        self.paused_at = time.time()   # the members' run() returned just after their last step
        self._progress()   # the events of the steps before the pause come before those of the resize
        before = [m.worker_id for m in self.group.members]
        preempted = self._let_preempted_go(ran)
        if len(self.group.members) < self.minimum:
            self._admit(wait_for=self.minimum)
        self._fire_chaos()
        joined = self.group.ready_pending(timeout=0) if len(self.group.members) < self.desired else []
        self.group.members += joined
        self.group.trim_to(self.desired)
        if [m.worker_id for m in self.group.members] == before:
            return   # nothing changed (a joiner died meanwhile): the group goes on as it was
        began = time.perf_counter()
        if len(self.group.members) > len(before):
            self._form(reason="scale_out", detail={"from_standby": sum(m.from_standby for m in joined)})
        else:
            self._form(reason="scale_in", detail={"preempted": preempted} if preempted else None)
        if self.resize_asked is not None and len(self.group.members) == self.desired:
            self.resized = (self.resize_asked, self.paused_at, time.perf_counter() - began)
            self.resize_asked = None

    def _let_preempted_go(self, ran: GroupRun) -> int:
        """Members that reported a preemption notice leave the group (event `preempted`, with the
        notice's lead time); replacements are asked for. A leaving member keeps its CPUs reserved
        until its node's end, so that no replacement lands on the node being taken. Returns how
        many left."""
        notices = ran.preempted
        leaving = [m for m in self.group.members if m.worker_id in notices]
        if not leaving:
            return 0
        if len(leaving) == len(self.group.members):
            self.on_warning(f"every worker's node is being preempted (step {self.step}); the job goes on until the "
                            "nodes are gone, then resumes from its latest checkpoint")
            return 0
        for member in leaving:
            self.group.park(member, notices[member.worker_id].terminate_at)
        for member in leaving:
            notice = notices[member.worker_id]
            self.events.add(Event("preempted", self.step, len(self.group.members), self.generation,
                                  detail={"source": notice.source, "action": notice.action,
                                          "lead_s": round(notice.terminate_at - notice.seen_at, 3),
                                          "host": member.host, "pid": member.pid}))
        self.group.grow_to(self.desired)
        return len(leaving)

    def _recover(self, ran: GroupRun) -> None:
        """A member died, hung or broke the collective: re-form among the survivors, in place.
        The outage counts from the last step the group completed."""
        before = len(self.group.members)
        self._count_failure("; ".join(sorted(set(ran.errors.values()))) or "a worker process died")
        lost = self.group.lost([m for m in self.group.members if m.worker_id not in ran.dead])
        hung = ran.hung | {worker_id for worker_id, verdict in lost.items() if verdict is Liveness.HUNG}
        self.group.release([m for m in self.group.members if m.worker_id in ran.dead or m.worker_id in lost],
                           unresponsive=True)
        lost = before - len(self.group.members)
        if self.kill_at is None:
            self.kill_at, self.kill_generation = self.last_step_at, self.generation
        if not self.group.members:   # no replica survived: the durable checkpoint is all that is left
            self.resume = True
        self.group.grow_to(self.desired)   # replacements join at a later step boundary
        if len(self.group.members) < self.minimum:
            self._admit(wait_for=self.minimum)
        detail = {"hung": len(hung)} if hung else {}
        self._form(reason="worker_lost", lost=lost, detail=detail)

    # ending -------------------------------------------------------------------------------

    def _finish(self, ran: GroupRun) -> Outcome:
        """Every member finished: take the final state from any that is still alive."""
        self._progress()
        state = metrics = None
        for member in self.group.members:
            try:
                state = self.group.state_of(member)
                metrics = ran.results[member.worker_id].metrics
                self.group.shutdown(member)
                break
            except GROUP_ERRORS:
                continue
        if state is None:   # all died after the last step: the durable checkpoint holds the end
            raise UserError("every worker died after the last step", where="elastic job",
                            fix="run `elastrain resume JOB_ID`", exit_code=1)
        return Outcome(JobState.SUCCEEDED, state, metrics=metrics)

    def _cancelled(self) -> Outcome:
        """The group paused on a cancel request: the job ends with the state it reached (its
        `cancelled` event, with the job's duration, is the run's final event)."""
        return Outcome(JobState.CANCELLED, self.group.state_of(self.group.members[0]))

    def _failed(self, worker_id: int, result: RunResult) -> Outcome:
        """A member's training diverged or its training code raised: the same inputs would do so
        again, so the job fails at once with that member's state (the last completed step)."""
        member = next(m for m in self.group.members if m.worker_id == worker_id)
        state = self.group.state_of(member)
        return Outcome(JobState.FAILED, state, message=result.message, last_good_state=state,
                       traceback=result.traceback)
