"""The elastic layer: a job's runner and its driver, the worker group on Ray (membership,
recovery, checkpoints). The run folder a job records into, and its states, are `elastrain.runs`.

What other layers (`api`, `cli`, the SDK) use is exported here; the submodules are internals.
Names are imported on first use, so that importing this package imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "ChaosAction": "chaos", "parse_chaos": "chaos", "connect_ray": "connect",
    "DriverLaunch": "driver", "DriverOutcome": "driver", "find_driver": "driver", "launch_driver": "driver",
    "run_here": "driver",
    "RunOptions": "job", "resume_job": "job", "run_job": "job",
}
__all__ = ["ChaosAction", "DriverLaunch", "DriverOutcome", "RunOptions", "connect_ray", "find_driver", "launch_driver",
           "parse_chaos", "resume_job", "run_here", "run_job"]

if TYPE_CHECKING:
    from elastrain.elastic.chaos import ChaosAction, parse_chaos
    from elastrain.elastic.connect import connect_ray
    from elastrain.elastic.driver import DriverLaunch, DriverOutcome, find_driver, launch_driver, run_here
    from elastrain.elastic.job import RunOptions, resume_job, run_job


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'elastrain.elastic' has no attribute {name!r}")
    return getattr(importlib.import_module(f"elastrain.elastic.{_HOMES[name]}"), name)
