"""A trained model on disk: weights, how to rebuild it, and its preprocessing.

A model directory holds `model.json` (the model spec, input shape, outputs, task, loss, the job
spec it was trained by, and its `format`), `preprocess.json` (the fitted preprocessing and label
encoding) and the weights in the format's file: `model.pt` (format `torch`: a state dict, loaded
with `weights_only=True`; `torchao-int8`: the same after torchao's int8 quantization) or
`model.onnx` (format `onnx`: the graph with its weights, run by ONNX Runtime; `elastrain optimize`
writes these)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
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

    model: nn.Module | Any   # a torch module, or an `OnnxModule`
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
        return self.decode_scores(self._scores(features).numpy())

    def decode_scores(self, scores: np.ndarray) -> list:
        """Predictions (values, or the original class labels) from the network's scores (N, outputs)."""
        predicted = predictions(torch.from_numpy(scores), self.task).numpy()
        if self.task == "classification":
            return self.preprocessor.decode(predicted)
        return [float(v) for v in predicted]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The network's scores (N, outputs) float32 for preprocessed input (N, F) float32."""
        return self._scores(features).numpy()

    @torch.no_grad()
    def _scores(self, features: np.ndarray) -> torch.Tensor:
        self.model.eval()
        return self.model(torch.from_numpy(features))


class WriteFailed(OSError):
    """A file could not be written for want of space or permission: `strerror` is one line naming
    the path, the reason and the bytes it needs (see `failed_write`)."""

    def __init__(self, errno: int | None, line: str, path: str) -> None:
        super().__init__(errno, line)
        self.path = path

    def __reduce__(self) -> tuple:
        return type(self), (self.errno, self.strerror, self.path)

    def __str__(self) -> str:
        return self.strerror


def failed_write(what: str, path: str, needed: int, cause: OSError, free: int | None) -> WriteFailed:
    """The error of writing `what` (e.g. "checkpoint of step 40") to `path`, failed with `cause`:
    "WHAT not written to PATH: REASON (it needs N bytes; F bytes free)"."""
    reason = cause.strerror or type(cause).__name__
    room = f"; {free} bytes free" if free is not None else ""
    return WriteFailed(cause.errno, f"{what} not written to {path}: {reason} (it needs {needed} bytes{room})", path)


META, PREPROCESS = "model.json", "preprocess.json"
WEIGHTS = {"torch": "model.pt", "torchao-int8": "model.pt", "onnx": "model.onnx"}   # format -> its file


def save_model(directory: Path, model: nn.Module, model_spec: ModelSpec, input_shape: tuple[int, ...],
               n_outputs: int, task: str, loss: str, preprocessor: Preprocessor, job: dict | None = None) -> Path:
    """Write a model directory (format `torch`) and return its path; `job` is the job spec it was
    trained by, as a dict (what `elastrain optimize` reads the validation data from).

    Raises:
        WriteFailed: the directory could not be written (a full or read-only disk, no permission);
            nothing of this save is left in it.
    """
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    meta = {"format": "torch", "model": model_spec.model_dump(mode="json"), "input_shape": list(input_shape),
            "n_outputs": n_outputs, "task": task, "loss": loss, "job": job}
    # model.json last: a directory is a model directory once it has one (`load_model`).
    _write_files(directory, {WEIGHTS["torch"]: weights.getvalue(),
                             PREPROCESS: json.dumps(preprocessor.to_dict()).encode(),
                             META: json.dumps(meta, indent=2).encode()})
    return directory


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write `files` ({name: content}) into `directory`, each under a temporary name renamed into
    place, so that a reader never sees half a file.

    Raises:
        WriteFailed: a write failed; what this call wrote, temporary or renamed, is removed.
    """
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            temporary = directory / f".{name}.{os.getpid()}.tmp"
            written.append(temporary)
            temporary.write_bytes(content)
            temporary.replace(directory / name)
            written[-1] = directory / name
    except OSError as exc:
        for path in written:   # partial files would keep a full disk full
            path.unlink(missing_ok=True)
        free = shutil.disk_usage(directory).free if directory.is_dir() else None
        with contextlib.suppress(OSError):   # an empty model folder would look like a model lost
            directory.rmdir()
        raise failed_write("the model", str(directory), sum(map(len, files.values())), exc, free) from exc


def read_meta(directory: str | Path) -> dict:
    """A model directory's model.json (format `torch` when it names none); the directory may be an
    fsspec URL where the model was published (e.g. s3://bucket/models/x)."""
    if "://" in str(directory):
        with fsspec.open(f"{str(directory).rstrip('/')}/{META}", "r") as file:
            return {"format": "torch", **json.loads(file.read())}
    return {"format": "torch", **json.loads((Path(directory) / META).read_text())}


def model_files(directory: str | Path) -> list[Path]:
    """The files of a model directory: its metadata, preprocessing and weights."""
    directory = Path(directory)
    return [directory / META, directory / PREPROCESS, directory / WEIGHTS[read_meta(directory)["format"]]]


def publish_model(directory: Path, url: str) -> str:
    """Copy a model directory to `url` (any fsspec URL, e.g. s3://bucket/models/x) and return it."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    for path in model_files(directory):
        fs.put_file(str(path), f"{root}/{path.name}")
    return url


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, or published to an fsspec URL.

    Raises:
        UserError: the directory is missing or is not a model directory.
    """
    if "://" in str(directory):
        with tempfile.TemporaryDirectory() as local:
            fs, root = fsspec.core.url_to_fs(str(directory))
            for name in {META, PREPROCESS, *WEIGHTS.values()}:
                if fs.exists(f"{root}/{name}"):
                    fs.get_file(f"{root}/{name}", str(Path(local) / name))
            return load_model(local)
    directory = Path(directory)
    if not (directory / META).is_file():
        raise UserError(f"not a model directory (missing {META})", where=str(directory),
                        fix="pass the model_path that `elastrain run` printed")
    meta = read_meta(directory)
    missing = [p.name for p in model_files(directory) if not p.is_file()]
    if missing:
        raise UserError(f"not a model directory (missing {', '.join(missing)})", where=str(directory),
                        fix="pass the model_path that `elastrain run` printed")
    preprocessor = Preprocessor.from_dict(json.loads((directory / PREPROCESS).read_text()))
    return SavedModel(_network(directory, meta), preprocessor, meta["task"], meta["loss"])


def _network(directory: Path, meta: dict) -> Any:
    """The callable that scores features: a torch module, or an ONNX Runtime session for `onnx`."""
    weights = directory / WEIGHTS[meta["format"]]
    if meta["format"] == "onnx":
        from elastrain.models.onnx_runtime import OnnxModule

        return OnnxModule(weights)
    model = build_model(ModelSpec.model_validate(meta["model"]), tuple(meta["input_shape"]), meta["n_outputs"])
    if meta["format"] == "torchao-int8":
        from elastrain.optimize.torchao_int8 import quantize_int8

        model = quantize_int8(model.eval())
    model.load_state_dict(torch.load(weights, weights_only=True), assign=True)
    return model
