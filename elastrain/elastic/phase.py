"""The states of an elastic job's control loop and the moves between them, in one place.

The loop starts its group, then runs it until every member's `run` returns; what came back
(`decide`) sends it to re-form (resize or recovery, then run again) or to one of its ends.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where the control loop is."""

    STARTING = "starting"          # workers are started and admitted; the first generation forms
    RUNNING = "running"            # the group trains; progress, chaos and requests are watched
    RESIZING = "resizing"          # the group paused whole: workers join or leave, then it re-forms
    RECOVERING = "recovering"      # a member was lost or the collective broke: re-form among survivors
    FINISHED = "finished"          # every member took the last step
    FAILED = "failed"              # the training code diverged or raised
    CANCELLED = "cancelled"        # asked to cancel, or the epoch gate closed
    INTERRUPTED = "interrupted"    # the driver shuts down; the job resumes under the next one

    @property
    def is_terminal(self) -> bool:
        """The loop ends here."""
        return not TRANSITIONS[self]

    @property
    def ended_by_group(self) -> bool:
        """The group itself ended the job, so its members' state is known (they may be reused)."""
        return self in (Phase.FINISHED, Phase.FAILED, Phase.CANCELLED)


_ENDS = frozenset({Phase.FINISHED, Phase.FAILED, Phase.CANCELLED, Phase.INTERRUPTED})
# Where each state may go next. STARTING can be interrupted while it waits for workers; RESIZING
# and RECOVERING may wait for workers too, and then be interrupted.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.INTERRUPTED}),
    Phase.RUNNING: frozenset({Phase.RESIZING, Phase.RECOVERING}) | _ENDS,
    Phase.RESIZING: frozenset({Phase.RUNNING, Phase.INTERRUPTED}),
    Phase.RECOVERING: frozenset({Phase.RUNNING, Phase.INTERRUPTED}),
    **{end: frozenset() for end in _ENDS},
}


class PhaseError(RuntimeError):
    """A move the loop must never make (a bug in the controller)."""


def advance(current: Phase, to: Phase) -> Phase:
    """Move from `current` to `to`.

    Raises:
        PhaseError: `TRANSITIONS` has no such move.
    """
    if to not in TRANSITIONS[current]:
        raise PhaseError(f"the control loop cannot go from {current.value} to {to.value}")
    return to
