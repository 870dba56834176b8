"""Where elastrain keeps its state on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$ELASTRAIN_HOME`, or `~/.elastrain`: runs, models and (later) the metadata database."""
    return Path(os.environ.get("ELASTRAIN_HOME") or Path.home() / ".elastrain").expanduser()
