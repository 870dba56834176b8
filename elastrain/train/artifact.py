"""A trained model on disk: weights, how to rebuild it, and its preprocessing.

A model directory holds `model.pt` (a state dict, loaded with `weights_only=True`),
`model.json` (the model spec, input shape, outputs, task and loss) and
`preprocess.json` (the fitted preprocessing and label encoding)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from elastrain.data import Preprocessor
from elastrain.errors import UserError
from elastrain.models import build_model
from elastrain.spec import ModelSpec
from elastrain.train.losses import predictions


@dataclass
class SavedModel:
    """A model loaded for inference, with the preprocessing it was trained behind.

    Attributes:
        model: the network (in eval mode once used).
        preprocessor: turns raw samples into model input, class ids into labels.
        task: "classification" or "regression".
        loss: the loss it was trained with (it decides what probabilities mean).
    """

    model: nn.Module
    preprocessor: Preprocessor
    task: str
    loss: str

    def predict(self, rows: Any) -> list:
        """Predictions for raw samples, as the training data held them (a DataFrame, records
        keyed by column, rows of values in column order, or an array of samples): values, or
        the original class labels. The saved preprocessing is applied.

        Raises:
            UserError: the samples do not match the training data (see Preprocessor.transform_rows).
        """
        return self.predict_features(self.preprocessor.transform_rows(rows))

    def predict_proba(self, rows: Any) -> np.ndarray:
        """Class probabilities (N, classes), columns in the order of `classes`, for raw samples.

        Raises:
            UserError: the model is a regression, or was trained with a hinge loss (its scores
                are margins, not probabilities).
        """
        return self.proba_features(self.preprocessor.transform_rows(rows))

    def proba_features(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for already preprocessed model input (N, F) float32.

        Raises:
            UserError: as :meth:`predict_proba`.
        """
        if self.task != "classification" or self.loss not in ("cross_entropy", "bce"):
            raise UserError(f"a {self.task} model trained with loss {self.loss} gives no probabilities",
                            where="predict_proba", fix="use predict; probabilities need loss cross_entropy or bce")
        scores = self._scores(features)
        if scores.shape[1] == 1:   # bce: one logit for the second class
            positive = torch.sigmoid(scores[:, 0])
            return torch.stack([1 - positive, positive], dim=1).numpy()
        return torch.softmax(scores, dim=1).numpy()

    @property
    def classes(self) -> list | None:
        """The class labels, in the order of predict_proba's columns (None for a regression)."""
        return self.preprocessor.classes

    def predict_features(self, features: np.ndarray) -> list:
        """Predictions for already preprocessed model input (N, F) float32."""
        predicted = predictions(self._scores(features), self.task).numpy()
        if self.task == "classification":
            return self.preprocessor.decode(predicted)
        return [float(v) for v in predicted]

    @torch.no_grad()
    def _scores(self, features: np.ndarray) -> torch.Tensor:
        self.model.eval()
        return self.model(torch.from_numpy(features))


def save_model(directory: Path, model: nn.Module, model_spec: ModelSpec, input_shape: tuple[int, ...],
               n_outputs: int, task: str, loss: str, preprocessor: Preprocessor) -> Path:
    """Write a model directory and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    meta = {"model": model_spec.model_dump(mode="json"), "input_shape": list(input_shape),
            "n_outputs": n_outputs, "task": task, "loss": loss}
    (directory / "model.json").write_text(json.dumps(meta, indent=2))
    (directory / "preprocess.json").write_text(json.dumps(preprocessor.to_dict()))
    return directory


MODEL_FILES = ("model.pt", "model.json", "preprocess.json")


def publish_model(directory: Path, url: str) -> str:
    """Copy a model directory to `url` (any fsspec URL, e.g. s3://bucket/models/x) and return it."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    for name in MODEL_FILES:
        fs.put_file(str(directory / name), f"{root}/{name}")
    return url


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, or published to an fsspec URL.

    Raises:
        UserError: the directory is missing or is not a model directory.
    """
    if "://" in str(directory):
        with tempfile.TemporaryDirectory() as local:
            fs, root = fsspec.core.url_to_fs(str(directory))
            for name in MODEL_FILES:
                if fs.exists(f"{root}/{name}"):
                    fs.get_file(f"{root}/{name}", str(Path(local) / name))
            return load_model(local)
    directory = Path(directory)
    needed = [directory / name for name in MODEL_FILES]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise UserError(f"not a model directory (missing {', '.join(missing)})", where=str(directory),
                        fix="pass the model_path that `elastrain run` printed")
    meta = json.loads(needed[1].read_text())
    model = build_model(ModelSpec.model_validate(meta["model"]), tuple(meta["input_shape"]), meta["n_outputs"])
    model.load_state_dict(torch.load(needed[0], weights_only=True))
    preprocessor = Preprocessor.from_dict(json.loads(needed[2].read_text()))
    return SavedModel(model, preprocessor, meta["task"], meta["loss"])
