"""What the controller does once its group's `run` calls have returned: a pure decision over
what came back, which the controller then carries out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Returned:
    """What one watch of the group saw.

    Attributes:
        statuses: worker id -> the status its `run` returned (done, paused, broken, diverged,
            error); members that died have none.
        dead: a member died, or was killed for not answering.
        interrupt: the driver is shutting down (the job resumes under the next one).
        cancel: the job was asked to cancel.
    """

    statuses: dict[int, str]
    dead: bool = False
    interrupt: bool = False
    cancel: bool = False


@dataclass(frozen=True)
class Fail:
    """The training code raised or diverged on `worker_id`: the same inputs would do it again."""

    worker_id: int


@dataclass(frozen=True)
class Finish:
    """Every member has taken the job's last step."""


@dataclass(frozen=True)
class Interrupt:
    """Stop for the driver's shutdown, keeping the job resumable."""


@dataclass(frozen=True)
class Cancel:
    """End the job as cancelled with the state it reached."""


@dataclass(frozen=True)
class Recover:
    """A member was lost or the collective broke: re-form among the survivors."""


@dataclass(frozen=True)
class Resize:
    """The group paused whole: let ready workers join, extra ones leave, due chaos actions fire."""


Decision = Fail | Finish | Interrupt | Cancel | Recover | Resize


def decide(returned: Returned) -> Decision:
    """The controller's next move. A failure of the training code wins over everything; a broken
    group is recovered before a finish, an interrupt or a cancel is considered (each needs the
    whole group's state)."""
    for worker_id, status in returned.statuses.items():
        if status in ("diverged", "error"):
            return Fail(worker_id)
    if returned.dead or "broken" in returned.statuses.values():
        return Recover()
    if all(status == "done" for status in returned.statuses.values()):
        return Finish()
    if returned.interrupt:
        return Interrupt()
    if returned.cancel:
        return Cancel()
    return Resize()
