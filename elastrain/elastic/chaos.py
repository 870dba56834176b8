"""Fault injection for demos and tests: `--chaos "kill@step=40,scale=3@step=80,scale=1@step=120"`.

Actions: `kill` SIGKILLs the highest-ranked worker's process (`kill:R` the worker of rank R);
`scale=N` resizes the job to N workers. Each fires once: the group pauses after the step it
names and the action is carried out there, unless the previous resize has not yet taken effect
or the group has not yet recovered from the previous kill (then it fires once they have).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from elastrain.errors import UserError

_ACTION = re.compile(r"^(?:kill(?::(?P<rank>\d+))?|scale=(?P<workers>\d+))@step=(?P<step>\d+)$")


@dataclass(frozen=True)
class ChaosAction:
    """One injected event: `kind` is "kill" or "scale"."""

    kind: str
    step: int
    workers: int | None = None   # for scale
    rank: int | None = None      # for kill; None = the highest rank


def parse_chaos(text: str | None) -> list[ChaosAction]:
    """The actions a `--chaos` string names, in step order.

    Raises:
        UserError: an action is malformed.
    """
    actions = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        match = _ACTION.match(part)
        if not match:
            raise UserError(f"cannot read the chaos action '{part}'", where="--chaos",
                            fix="write actions like kill@step=40, kill:0@step=50, scale=3@step=80, comma-separated")
        if match["workers"] is not None:
            if int(match["workers"]) < 1:
                raise UserError("scale needs at least 1 worker", where=f"--chaos {part}", fix="use scale=1 or more")
            actions.append(ChaosAction("scale", int(match["step"]), workers=int(match["workers"])))
        else:
            rank = int(match["rank"]) if match["rank"] is not None else None
            actions.append(ChaosAction("kill", int(match["step"]), rank=rank))
    return sorted(actions, key=lambda a: a.step)
