"""The model a server serves: found by a reference (a registered NAME, NAME:VERSION, NAME@ALIAS,
a run, or a model directory), and found again when the alias or latest version it names moves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from elastrain.train.artifact import SavedModel, load_model, read_meta

PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch_torch", "torchao-int8": "pytorch_torch"}


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and what the protocol says of it.

    Attributes:
        name / version: as clients address it (a model directory: its job's name, version "1").
        path: where it was loaded from.
        n_features: the width of its input (N, n_features) after preprocessing.
        platform: the V2 protocol's platform string (onnxruntime_onnx, pytorch_torch).
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
