"""Data: reading sources, the seeded split, preprocessing saved with the model, the elastic sampler."""

from elastrain.data.dataset import Dataset, prepare_dataset, read_prediction_input
from elastrain.data.preprocess import Preprocessor

__all__ = ["Dataset", "Preprocessor", "prepare_dataset", "read_prediction_input"]
