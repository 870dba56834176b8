"""Where elastrain keeps its state on this machine."""

from __future__ import annotations

import os
from pathlib import Path

VERBOSE = "ELASTRAIN_VERBOSE"   # set (to 1) by `elastrain --verbose`: Ray's own messages stay on the terminal


def home() -> Path:
    """`$ELASTRAIN_HOME`, or `~/.elastrain`: runs, models and (later) the metadata database."""
    return Path(os.environ.get("ELASTRAIN_HOME") or Path.home() / ".elastrain").expanduser()


def ray_log() -> Path | None:
    """Where Ray's own start-up messages go (`home()/ray.log`), or None with `--verbose`."""
    return None if os.environ.get(VERBOSE) else home() / "ray.log"
