"""The elastic layer: a job's runner and its driver, the worker group on Ray (membership,
recovery, checkpoints), and the run folder a job records into.

What other layers (`api`, `cli`, the SDK) use is exported here; the submodules are internals.
Names are imported on first use, so that reading a run folder does not import torch and Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "ChaosAction": "chaos", "parse_chaos": "chaos", "connect_ray": "connect",
    "DriverLaunch": "driver", "DriverOutcome": "driver", "find_driver": "driver", "launch_driver": "driver",
    "run_here": "driver",
    "RunOptions": "job", "resume_job": "job", "run_job": "job",
    "RunFolder": "run_folder", "new_job_id": "run_folder",
    "FINAL_STATES": "status", "JobResult": "status", "JobStatus": "status",
}
__all__ = ["FINAL_STATES", "ChaosAction", "DriverLaunch", "DriverOutcome", "JobResult", "JobStatus", "RunFolder",
           "RunOptions", "connect_ray", "find_driver", "launch_driver", "new_job_id", "parse_chaos", "resume_job",
           "run_here", "run_job"]

if TYPE_CHECKING:
    from elastrain.elastic.chaos import ChaosAction, parse_chaos
    from elastrain.elastic.connect import connect_ray
    from elastrain.elastic.driver import DriverLaunch, DriverOutcome, find_driver, launch_driver, run_here
    from elastrain.elastic.job import RunOptions, resume_job, run_job
    from elastrain.elastic.run_folder import RunFolder, new_job_id
    from elastrain.elastic.status import FINAL_STATES, JobResult, JobStatus


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'elastrain.elastic' has no attribute {name!r}")
    return getattr(importlib.import_module(f"elastrain.elastic.{_HOMES[name]}"), name)
