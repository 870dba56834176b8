"""elastrain: train machine-learning models on elastic compute.

The public API (see the README's "Python API"): :class:`Job` declares and runs a job,
:class:`JobHandle` follows and steers a started one (:class:`JobStatus`, its state a
:class:`JobState`), :func:`load_model` loads what it saved, :class:`JobResult` is what a run
returns, :class:`Study` tunes a job's hyperparameters (:class:`StudyResult`), and
:class:`UserError` is what bad input raises. They are imported on first use, so that commands
which do not train start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Job", "JobHandle", "JobResult", "JobState", "JobStatus", "SavedModel", "Study", "StudyResult",
           "UserError", "load_model"]

_HOMES = {"Job": "elastrain.sdk", "JobHandle": "elastrain.sdk", "JobResult": "elastrain.runs",
          "JobState": "elastrain.runs", "JobStatus": "elastrain.runs", "SavedModel": "elastrain.train.artifact",
          "load_model": "elastrain.train.artifact", "UserError": "elastrain.errors",
          "Study": "elastrain.tune.study", "StudyResult": "elastrain.tune.study"}

if TYPE_CHECKING:
    from elastrain.errors import UserError
    from elastrain.runs import JobResult, JobState, JobStatus
    from elastrain.sdk import Job, JobHandle
    from elastrain.train.artifact import SavedModel, load_model
    from elastrain.tune.study import Study, StudyResult


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'elastrain' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
