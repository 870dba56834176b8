"""The elastic layer: a job's runner and its driver, the worker group on Ray (membership,
recovery, checkpoints), and the run folder a job records into.

What other layers (`api`, `cli`, the SDK) use is exported here; the submodules are internals.
"""

from elastrain.elastic.chaos import ChaosAction, parse_chaos
from elastrain.elastic.connect import connect_ray
from elastrain.elastic.driver import DriverLaunch, DriverOutcome, find_driver, launch_driver, run_here
from elastrain.elastic.job import FINAL_STATES, JobResult, RunOptions, new_job_id, resume_job, run_job
from elastrain.elastic.run_folder import RunFolder
from elastrain.elastic.status import JobStatus

__all__ = ["FINAL_STATES", "ChaosAction", "DriverLaunch", "DriverOutcome", "JobResult", "JobStatus", "RunFolder",
           "RunOptions", "connect_ray", "find_driver", "launch_driver", "new_job_id", "parse_chaos",
           "resume_job", "run_here", "run_job"]
