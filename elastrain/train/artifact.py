"""A trained model on disk: weights, how to rebuild it, and its preprocessing.

A model directory holds `model.json` (the model spec, input shape, outputs, task, loss, the job
spec it was trained by, and its `format`), `preprocess.json` (the fitted preprocessing and label
encoding) and the weights in the format's file: `model.pt` (format `torch`: a state dict, loaded
with `weights_only=True`; `torchao-int8`: the same after torchao's int8 quantization) or
`model.onnx` (format `onnx`: the graph with its weights, run by ONNX Runtime; `elastrain optimize`
writes these) or `model.ubj` (format `xgboost`: a tree model's booster in XGBoost's UBJSON)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from elastrain.data import Preprocessor
from elastrain.errors import UserError, first_line
from elastrain.models import build_model
from elastrain.spec import ModelSpec, parse_model_spec
from elastrain.spec.models import MODEL_SPECS
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
WEIGHTS = {"torch": "model.pt", "torchao-int8": "model.pt", "onnx": "model.onnx",
           "xgboost": "model.ubj"}   # format -> its file


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
    return _save(directory, "torch", weights.getvalue(), model_spec, input_shape, n_outputs, task, loss,
                 preprocessor, job)


def save_booster(directory: Path, booster: bytes, model_spec: ModelSpec, input_shape: tuple[int, ...],
                 n_outputs: int, task: str, loss: str, preprocessor: Preprocessor, job: dict | None = None) -> Path:
    """Write a model directory of format `xgboost` (`booster`: XGBoost's UBJSON) and return its path.

    Raises:
        WriteFailed: as :func:`save_model`.
    """
    return _save(directory, "xgboost", booster, model_spec, input_shape, n_outputs, task, loss, preprocessor, job)


def _save(directory: Path, format_: str, weights: bytes, model_spec: ModelSpec, input_shape: tuple[int, ...],
          n_outputs: int, task: str, loss: str, preprocessor: Preprocessor, job: dict | None) -> Path:
    meta = {"format": format_, "model": model_spec.model_dump(mode="json"), "input_shape": list(input_shape),
            "n_outputs": n_outputs, "task": task, "loss": loss, "job": job}
    # model.json last: a directory is a model directory once it has one (`load_model`).
    _write_files(directory, {WEIGHTS[format_]: weights,
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


RESAVE = "re-save or re-export it (`elastrain run` saves a model, `elastrain optimize` exports one)"
NOT_A_MODEL = "pass the model_path that `elastrain run` printed"
TASKS = ("classification", "regression")
# model.json's keys every format needs: (does this value do, what it should be).
META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, dict), "an object (the model spec)"),
    "input_shape": (lambda v: isinstance(v, list) and bool(v) and all(_positive_int(n) for n in v),
                    "a list of positive whole numbers"),
    "n_outputs": (lambda v: _positive_int(v), "a positive whole number"),
    "task": (lambda v: v in TASKS, " or ".join(TASKS)),
    "loss": (lambda v: isinstance(v, str), "a loss name"),
}


def read_meta(directory: str | Path) -> dict:
    """A model directory's model.json (format `torch` when it names none), checked as
    :func:`check_meta` does; the directory may be an fsspec URL where the model was published
    (e.g. s3://bucket/models/x).

    Raises:
        UserError: model.json is missing or damaged; the line names the folder and what is wrong.
    """
    return check_meta(_read_text(directory, META), str(directory))


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
    """Read a model directory written by :func:`save_model`, or published to an fsspec URL; each
    of its files is checked on the way (the one validating loader `predict`, `serve` and
    `optimize` share).

    Raises:
        UserError: the directory is missing, is not a model directory, or one of its files is
            damaged or foreign (bad JSON, an unknown format, missing keys, truncated weights,
            weights of another model); the line names the folder, the file and what is wrong.
    """
    if "://" in str(directory):
        with tempfile.TemporaryDirectory() as local:
            fs, root = fsspec.core.url_to_fs(str(directory))
            for name in {META, PREPROCESS, *WEIGHTS.values()}:
                if fs.exists(f"{root}/{name}"):
                    fs.get_file(f"{root}/{name}", str(Path(local) / name))
            return _load_local(Path(local), str(directory))
    return _load_local(Path(directory), str(directory))


def damaged(folder: str, what: str, fix: str = RESAVE) -> UserError:
    """The one line for a model folder that is not what it should be:
    "model folder FOLDER: WHAT — FIX"."""
    return UserError(what, where=f"model folder {folder}", fix=fix)


def check_meta(text: str, folder: str) -> dict:
    """The model.json `text` of model folder `folder`, parsed and checked: a JSON object whose
    `format` (default `torch`) is one elastrain reads and which has every key of META_KEYS.

    Raises:
        UserError: it is not so; the line says what is wrong.
    """
    meta = _parse_json(text, META, folder)
    if not isinstance(meta, dict):
        raise damaged(folder, f"{META} is not a JSON object")
    meta = {"format": "torch", **meta}
    if meta["format"] not in WEIGHTS:
        raise damaged(folder, f"{META} names format {str(meta['format'])[:40]!r}, which elastrain does not "
                              f"read (it reads {', '.join(WEIGHTS)})",
                      fix="it was written by another program or a newer elastrain: " + RESAVE)
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise damaged(folder, f"{META} lacks {', '.join(missing)}")
    for key, (fits, expected) in META_KEYS.items():
        if not fits(meta[key]):
            raise damaged(folder, f"{META}'s {key} is {json.dumps(meta[key])[:40]}, not {expected}")
    return meta


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read_text(directory: str | Path, name: str, folder: str | None = None) -> str:
    """The text of file `name` of model folder `directory` (a path or fsspec URL), which the
    user knows as `folder` (default: `directory`).

    Raises:
        UserError: the folder or the file is missing or cannot be read.
    """
    folder = folder or str(directory)
    try:
        if "://" in str(directory):
            with fsspec.open(f"{str(directory).rstrip('/')}/{name}", "r") as file:
                return file.read()
        return (Path(directory) / name).read_text()
    except (FileNotFoundError, NotADirectoryError):
        if "://" not in str(directory) and not Path(directory).is_dir():
            what = "this is a file, not a folder" if Path(directory).exists() else "there is no such folder"
            raise damaged(folder, what, fix=NOT_A_MODEL) from None
        raise damaged(folder, f"not a model directory (missing {name})", fix=NOT_A_MODEL) from None
    except UnicodeDecodeError:
        raise damaged(folder, f"{name} is not text (a JSON file was expected)") from None
    except OSError as exc:
        raise damaged(folder, f"{name} cannot be read ({exc.strerror or type(exc).__name__})",
                      fix="check the file's permissions") from None


def _parse_json(text: str, name: str, folder: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(folder, f"{name} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None


def _load_local(directory: Path, folder: str) -> SavedModel:
    """The model in local `directory`, which the user knows as `folder`, every file checked."""
    meta = check_meta(_read_text(directory, META, folder), folder)
    missing = [name for name in (PREPROCESS, WEIGHTS[meta["format"]]) if not (directory / name).is_file()]
    if missing:
        raise damaged(folder, f"not a model directory (missing {', '.join(missing)})", fix=NOT_A_MODEL)
    preprocessor = _preprocessor(_read_text(directory, PREPROCESS, folder), folder)
    return SavedModel(_network(directory, meta, folder), preprocessor, meta["task"], meta["loss"])


def _preprocessor(text: str, folder: str) -> Preprocessor:
    """The preprocessing preprocess.json `text` describes.

    Raises:
        UserError: it is not JSON, or not the preprocessing elastrain writes.
    """
    raw = _parse_json(text, PREPROCESS, folder)
    try:
        return Preprocessor.from_dict(raw)
    except KeyError as exc:
        raise damaged(folder, f"{PREPROCESS} lacks {exc.args[0]}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise damaged(folder, f"{PREPROCESS} is not elastrain's preprocessing ({first_line(exc)})") from None


def _network(directory: Path, meta: dict, folder: str) -> Any:
    """The callable that scores features: a torch module, or an ONNX Runtime session for `onnx`.

    Raises:
        UserError: the weights file is empty, truncated, foreign, or does not fit the model spec.
    """
    weights = directory / WEIGHTS[meta["format"]]
    if weights.stat().st_size == 0:
        raise damaged(folder, f"{weights.name} is empty")
    if meta["format"] == "onnx":
        return _onnx_module(weights, folder)
    if meta["format"] == "xgboost":
        return _booster_module(weights, folder)
    try:
        spec = parse_model_spec(meta["model"])
    except ValidationError as exc:
        problem = exc.errors()[0]
        at = ".".join(str(part) for part in problem["loc"] if part not in MODEL_SPECS)   # without the kind's tag
        raise damaged(folder, f"{META}'s model spec is not one elastrain knows ({at}: {problem['msg']})") from None
    model = build_model(spec, tuple(meta["input_shape"]), meta["n_outputs"])
    if meta["format"] == "torchao-int8":
        from elastrain.models.torchao_int8 import quantize_int8

        model = quantize_int8(model.eval())
    state = _state_dict(weights, folder)
    _check_fits(model, state, weights.name, folder)
    model.load_state_dict(state, assign=True)
    return model


def _state_dict(weights: Path, folder: str) -> dict[str, torch.Tensor]:
    """The tensors a torch weights file holds, read with `weights_only=True`.

    Raises:
        UserError: it is truncated, not a torch file, or holds something else than named tensors.
    """
    try:
        state = torch.load(weights, weights_only=True)
    except pickle.UnpicklingError:
        raise damaged(folder, f"{weights.name} holds Python objects, not only weights (elastrain loads weights "
                              "only)") from None
    except Exception:   # torch's unpickler raises whatever a foreign or cut file trips (EOFError, KeyError, ...)
        raise damaged(folder, f"{weights.name} is truncated or not a PyTorch file") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise damaged(folder, f"{weights.name} holds a {type(state).__name__}, not the model's named weights")
    return dict(state)


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], name: str, folder: str) -> None:
    """Pass weights `state` that fit `model`: the same names, each of the same shape.

    Raises:
        UserError: they do not; the line names what is missing, extra or of another shape.
    """
    expected = model.state_dict()
    problems = [f"{label} {_some(keys)}" for label, keys in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
        ("of another shape", [k for k in expected if k in state and state[k].shape != expected[k].shape]),
    ) if keys]
    if problems:
        raise damaged(folder, f"{name} does not fit the model {META} describes (weights {'; '.join(problems)})")


def _some(names: list[str], shown: int = 3) -> str:
    """Up to `shown` names, then how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _onnx_module(weights: Path, folder: str) -> Any:
    """An ONNX Runtime session over the graph `weights` that elastrain exported.

    Raises:
        UserError: it is not an ONNX model, or not one with elastrain's input and output names.
    """
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
        NoSuchFile,
        RuntimeException,
    )

    from elastrain.models.onnx_runtime import INPUT, OUTPUT, OnnxModule

    try:
        module = OnnxModule(weights)
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile, RuntimeException):
        raise damaged(folder, f"{weights.name} is truncated or not an ONNX model") from None
    inputs = [i.name for i in module.session.get_inputs()]
    outputs = [o.name for o in module.session.get_outputs()]
    if inputs != [INPUT] or OUTPUT not in outputs:
        raise damaged(folder, f"{weights.name} is not a graph elastrain exported (inputs {inputs}, outputs "
                              f"{outputs}; expected input {INPUT!r} and output {OUTPUT!r})")
    return module


def _booster_module(weights: Path, folder: str) -> Any:
    """The XGBoost booster `weights` holds, as a module that scores features.

    Raises:
        UserError: it is not a booster XGBoost reads.
    """
    from xgboost.core import XGBoostError

    from elastrain.models.booster import BoosterModule

    try:
        return BoosterModule(weights)
    except XGBoostError:
        raise damaged(folder, f"{weights.name} is truncated or not an XGBoost model") from None
