"""What a worker reports to the controller, defined once: its progress while it trains
(`Progress`), how its `run` ended (`RunResult`), and what the whole group's runs came to
(`GroupRun`). All are frozen: a report is a fact about a moment, read by the controller and the
job's reporter, never changed after it is made. They travel between processes (Ray pickles them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from elastrain.elastic.checkpoints import CheckpointInfo
from elastrain.elastic.preemption import Notice


class RunStatus(StrEnum):
    """How a worker's `run` ended. The values are the strings `decide` reads."""

    DONE = "done"          # the job's last step is taken
    PAUSED = "paused"      # the group stopped after the same step (asked to, a chaos action, a notice, the gate)
    BROKEN = "broken"      # a peer was lost; the step in flight was discarded
    DIVERGED = "diverged"  # the loss is not finite
    ERROR = "error"        # the training code raised

    @property
    def failed(self) -> bool:
        """The training code failed: the same inputs would fail again, so the job must not retry."""
        return self in (RunStatus.DIVERGED, RunStatus.ERROR)


@dataclass(frozen=True)
class RunResult:
    """How one worker's `run` ended, at `step` (the last step it completed).

    Attributes:
        metrics: the final evaluation (DONE).
        error: why the collective broke (BROKEN).
        message: one line for the user (DIVERGED, ERROR); `traceback` where the code raised (ERROR).
        stopped: the epoch gate closed: the job ends cancelled (PAUSED).
        preempted: this worker's node will be taken; the worker leaves the group (PAUSED).
    """

    status: RunStatus
    step: int
    metrics: dict | None = None
    error: str | None = None
    message: str | None = None
    traceback: str | None = None
    stopped: bool = False
    preempted: Notice | None = None


@dataclass(frozen=True)
class EpochRecord:
    """An epoch's evaluation, taken after `step`; `epoch` counts from 1."""

    epoch: int
    step: int
    metrics: dict


@dataclass(frozen=True)
class StepIntervals:
    """Seconds between consecutive steps measured on one configuration of the group."""

    nodes: int
    workers: int
    local_batch: float
    intervals: tuple[float, ...]


@dataclass(frozen=True)
class Progress:
    """A worker's progress: where it is now, and what happened since its previous report.

    Attributes:
        step, epoch, loss: the last completed step, its epoch (from 0) and training loss.
        last_step_at: wall time of the last completed step.
        samples: samples trained on by the whole group so far in this process.
        bytes_read, data_wait_s: read from storage by the whole group so far in this process, and
            the seconds its members' steps waited for rows, summed over the members.
        losses: each step's training loss since the last report, as (step, epoch from 1, loss).
        epochs: evaluations since the last report.
        checkpoints: checkpoints written (or failed, `error` set) since the last report.
        step_times: step intervals measured since the last report.
        grad_noise: (|g|^2, variance) of the gradient, or None before it is known.
        step_ms: the current formation's mean step breakdown (see `StepBreakdown.as_ms`), None
            before two steps.
        first_step_at: wall time of the current formation's first step; None before it.
    """

    step: int
    epoch: int
    loss: float
    last_step_at: float
    samples: int
    losses: tuple[tuple[int, int, float], ...] = ()
    epochs: tuple[EpochRecord, ...] = ()
    checkpoints: tuple[CheckpointInfo, ...] = ()
    step_times: tuple[StepIntervals, ...] = ()
    grad_noise: tuple[float, float] | None = None
    step_ms: dict[str, float] | None = None
    first_step_at: float | None = None
    bytes_read: float = 0.0
    data_wait_s: float = 0.0


@dataclass(frozen=True)
class GroupRun:
    """What the group's `run` calls came to, once every one has returned or its member was lost.

    Attributes:
        results: worker id -> how its `run` ended.
        dead: members that died, or were killed for not answering.
        hung: of those, the ones killed because they stopped answering.
    """

    results: dict[int, RunResult]
    dead: frozenset[int] = frozenset()
    hung: frozenset[int] = frozenset()

    @property
    def errors(self) -> dict[int, str]:
        """Worker id -> why its run broke or failed (a lost peer, a divergence, the code raising)."""
        return {worker_id: result.error if result.status is RunStatus.BROKEN else result.message
                for worker_id, result in self.results.items()
                if result.status is RunStatus.BROKEN or result.status.failed}

    @property
    def stopped(self) -> bool:
        """A member's epoch gate closed: the job ends cancelled."""
        return any(result.stopped for result in self.results.values())

    @property
    def preempted(self) -> dict[int, Notice]:
        """Worker id -> the preemption notice of its node, for members that reported one."""
        return {worker_id: result.preempted for worker_id, result in self.results.items() if result.preempted}
