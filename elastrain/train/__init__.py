"""What one worker does in one step (loss, gradient, optimizer, metrics, state), and a job on one worker."""

from elastrain.train.artifact import SavedModel, load_model, save_model
from elastrain.train.job import JobResult, run_job
from elastrain.train.loop import fit
from elastrain.train.trainer import Collective, LocalCollective, StepReport, Trainer

__all__ = ["Collective", "JobResult", "LocalCollective", "SavedModel", "StepReport", "Trainer", "fit",
           "load_model", "run_job", "save_model"]
