"""What one worker does in one step (loss, gradient, optimizer, metrics, state), and the saved model."""

from elastrain.train.artifact import SavedModel, load_model, save_model
from elastrain.train.learner import Collective, Learner, LearnerBase, LocalCollective, StepReport, build_learner
from elastrain.train.loop import FitOutcome, fit
from elastrain.train.trainer import Trainer

__all__ = ["Collective", "FitOutcome", "Learner", "LearnerBase", "LocalCollective", "SavedModel", "StepReport",
           "Trainer", "build_learner", "fit", "load_model", "save_model"]
