"""The model a server serves: found by a reference (a registered NAME, NAME:VERSION, NAME@ALIAS,
a run, or a model directory), and found again when the alias or latest version it names moves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elastrain.errors import UserError
from elastrain.train.artifact import SavedModel, load_model, read_meta

PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch_torch", "torchao-int8": "pytorch_torch",
             "xgboost": "xgboost_ubj"}


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and what the protocol says of it.

    Attributes:
        name / version: as clients address it (a model directory: its job's name, version "1").
        path: where it was loaded from.
        n_features: the width of its input (N, n_features) after preprocessing.
        platform: the V2 protocol's platform string (onnxruntime_onnx, pytorch_torch, xgboost_ubj).
        follows: whether the reference may name another version later (an alias, or NAME alone).
    """

    name: str
    version: str
    path: str
    saved: SavedModel
    n_features: int
    n_outputs: int
    platform: str
    follows: bool


@dataclass(frozen=True)
class Located:
    """Where a reference points now."""

    name: str
    version: str
    path: str
    follows: bool


def locate(reference: str, db_url: str | None = None) -> Located:
    """Where `reference` points in this machine's registry (the jobs' database at `db_url`), or
    the run or model directory it names.

    Raises:
        UserError: it names nothing (the message lists what there is).
    """
    from elastrain.store.model_ref import (
        ModelNotFound,
        local_registry,
        locate_model,
        parse_model_ref,
        resolve_model_ref,
    )

    ref = parse_model_ref(reference)
    if ref.path is None:
        with local_registry(db_url) as (store, owner):
            try:
                info = resolve_model_ref(store, owner, ref)
                return Located(info.name, str(info.version), info.url, ref.version is None)
            except ModelNotFound:
                if ref.version is not None or ref.alias is not None:
                    raise
    path = locate_model(reference, db_url)
    job = read_meta(path).get("job") or {}
    return Located(job.get("name") or Path(path).name, "1", path, False)


def load(located: Located) -> ServedModel:
    """The model at `located`, loaded."""
    saved = load_model(located.path)
    meta = read_meta(located.path)
    return ServedModel(located.name, located.version, located.path, saved, math.prod(meta["input_shape"]),
                       meta["n_outputs"], PLATFORMS[meta["format"]], located.follows)


def check_features(features: np.ndarray, names: list[str], where: str) -> None:
    """Pass model input (N, F) float32 whose every value is finite.

    A value finite in the input but past float32's range (1e300; 3e38 once scaled) is infinite
    here, and the model's answer would be inf or NaN, which JSON cannot carry.

    Args:
        names: the model-input features' names (empty: they are named by index).

    Raises:
        UserError: a value is not finite; the line names its row and column.
    """
    bad = np.argwhere(~np.isfinite(features.reshape(len(features), -1)))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise UserError(f"row {row}, column {_feature(names, column)}: the value is past float32's range "
                        f"(±{np.finfo(np.float32).max:.4g}) once scaled as in training, or not a number",
                        where=where, fix="send values within the range the model was trained on")


def check_scores(scores: np.ndarray, features: np.ndarray, names: list[str], where: str) -> None:
    """Pass the model's scores (N, K) when every one is finite.

    Raises:
        UserError: a row's scores are inf or NaN (its values, finite in float32, overflowed inside
            the model); the line names the row and the column of its largest value.
    """
    bad = np.flatnonzero(~np.isfinite(scores.reshape(len(scores), -1)).all(axis=1))
    if len(bad):
        row = int(bad[0])
        flat = features[row].reshape(-1)
        column = int(np.argmax(np.abs(flat)))
        raise UserError(f"row {row}: the model's output overflows float32 (its largest value is column "
                        f"{_feature(names, column)}, {flat[column]:.4g} once scaled)", where=where,
                        fix="send values within the range the model was trained on")


def _feature(names: list[str], index: int) -> str:
    return repr(names[index]) if index < len(names) else str(index)
