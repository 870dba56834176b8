"""A job's run folder, `$ELASTRAIN_HOME/runs/JOB_ID`, and what it records: the layout (`RunFolder`,
the one place that knows it), the job's lifecycle (`JobState`), its live status (`JobStatus`, with
the step times it measured, `Observation`) and its result (`JobResult`).

This sits below both the elastic layer, whose drivers write run folders, and the store, the
optimizer and the CLI, which read them: reading a run folder imports neither torch nor Ray.
Names are imported on first use, so that naming a `JobState` imports no more than the enum.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "RunFolder": "run_folder", "absolute_paths": "run_folder", "new_job_id": "run_folder",
    "ENDED": "state", "JobState": "state",
    "JobResult": "status", "JobStatus": "status", "Observation": "status",
}
__all__ = ["ENDED", "JobResult", "JobState", "JobStatus", "Observation", "RunFolder", "absolute_paths", "new_job_id"]

if TYPE_CHECKING:
    from elastrain.runs.run_folder import RunFolder, absolute_paths, new_job_id
    from elastrain.runs.state import ENDED, JobState
    from elastrain.runs.status import JobResult, JobStatus, Observation


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'elastrain.runs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"elastrain.runs.{_HOMES[name]}"), name)
