"""What one worker does in one step (loss, gradient, optimizer, metrics, state), and the saved model."""

from elastrain.train.artifact import SavedModel, load_model, save_model
from elastrain.train.loop import FitOutcome, fit
from elastrain.train.trainer import Collective, LocalCollective, StepReport, Trainer

__all__ = ["Collective", "FitOutcome", "LocalCollective", "SavedModel", "StepReport", "Trainer", "fit",
           "load_model", "save_model"]
