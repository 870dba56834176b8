"""The elastic layer: a job's workers (in process or Ray actors), membership, recovery, checkpoints."""

from elastrain.elastic.chaos import ChaosAction, parse_chaos
from elastrain.elastic.job import JobResult, RunOptions, resume_job, run_job
from elastrain.elastic.run_folder import RunFolder

__all__ = ["ChaosAction", "JobResult", "RunFolder", "RunOptions", "parse_chaos", "resume_job", "run_job"]
