"""Reading a data source named in a spec into raw features and a raw target.

Tabular sources (csv, parquet, and the built-in tables) keep their columns as a DataFrame so
that preprocessing can name columns and rows in its errors; image and array sources
(idx, npz, digits) give an ndarray with the shape of one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from elastrain.data.check import missing_target
from elastrain.data.idx import read_idx_folder
from elastrain.data.tables import read_table
from elastrain.errors import UserError
from elastrain.spec import DataSpec


@dataclass
class RawData:
    """Features and target as read, before splitting and preprocessing.

    Exactly one of `frame` (tabular, target removed) and `array` (N, ...) is set.
    `where` names the source in error messages; `line_offset` turns a row index into a
    file line (2 for a CSV with a header), or is None when rows have no lines. `warnings` say
    what the reader left out (an index column, say), for the user.
    """

    target: np.ndarray
    where: str
    frame: pd.DataFrame | None = None
    array: np.ndarray | None = None
    line_offset: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def is_image(self) -> bool:
        """Whether samples are images (C, H, W)."""
        return self.array is not None and self.array.ndim >= 3


def read_source(data: DataSpec, seed: int) -> RawData:
    """The raw data `data.source` names (synthetic data is drawn with `seed`).

    Raises:
        UserError: the file is missing or unreadable, or the target cannot be found.
    """
    kind, arg = data.source_kind, data.source_arg
    if kind == "builtin":
        return _builtin(arg)
    if kind == "synthetic":
        return _synthetic(arg, data, seed)
    path = Path(arg)
    if kind == "idx":
        images, labels = read_idx_folder(path)
        return RawData(target=labels, where=str(path), array=images[:, None, :, :])
    if not path.is_file():
        raise UserError("data file not found", where=str(path),
                        fix="check data.source (relative paths are resolved against the spec file's folder)")
    if kind == "npz":
        return _npz(path, data.npz_keys)
    table = read_table(path, data.csv, kind, data.target)
    target = _pop_target(table.frame, data.target, path, table.how)
    if table.frame.shape[1] == 0:
        raise UserError(f"no feature columns: the file has only the target '{data.target}'{table.how}",
                        where=str(path), fix="add feature columns; if the file has them, set data.csv.sep to its "
                                             "separator")
    return RawData(target=target, where=str(path), frame=table.frame, line_offset=2 if kind == "csv" else None,
                   warnings=table.warnings)


def _pop_target(frame: pd.DataFrame, target: str, path: Path, how: str) -> np.ndarray:
    """The target column, taken out of `frame`; a blank value (a CSV's target is text) is missing."""
    if target not in frame.columns:
        raise missing_target(target, [str(c) for c in frame.columns], path, how)
    values = frame.pop(target).to_numpy(dtype=object)
    blank = np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    values[blank] = None
    return values


def _builtin(name: str) -> RawData:
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{name}")(as_frame=name != "digits")
    where = f"builtin:{name}"
    if name == "digits":
        return RawData(target=loaded.target.astype(np.int64), where=where,
                       array=loaded.images[:, None, :, :].astype(np.float64))
    return RawData(target=loaded.target.to_numpy(), where=where, frame=loaded.data)


def _synthetic(kind: str, data: DataSpec, seed: int) -> RawData:
    from sklearn import datasets

    size = data.synthetic
    informative = size.n_informative or max(size.n_features // 2, math.ceil(math.log2(size.n_classes)) + 1)
    if informative > size.n_features:
        raise UserError(f"n_informative ({informative}) is larger than n_features ({size.n_features})",
                        where="data.synthetic", fix="raise data.synthetic.n_features or lower n_informative")
    try:
        if kind == "classification":
            x, y = datasets.make_classification(
                n_samples=size.n_samples, n_features=size.n_features, n_informative=informative, n_redundant=0,
                n_classes=size.n_classes, n_clusters_per_class=1, flip_y=min(size.noise, 1.0), random_state=seed)
        else:
            x, y = datasets.make_regression(n_samples=size.n_samples, n_features=size.n_features,
                                            n_informative=informative, noise=size.noise, random_state=seed)
    except ValueError as exc:
        raise UserError(f"cannot generate this data: {exc}", where="data.synthetic",
                        fix="raise n_informative or lower n_classes") from None
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(size.n_features)])
    return RawData(target=y, where=f"synthetic:{kind}", frame=frame)


def _npz(path: Path, keys: tuple[str, str]) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise UserError(f"no array named {', '.join(repr(k) for k in missing)} "
                                f"(arrays: {', '.join(archive.files)})", where=str(path),
                                fix="set data.npz_keys to [features key, target key]")
            features, target = archive[keys[0]], archive[keys[1]]
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the .npz file: {exc}", where=str(path),
                        fix="save it with numpy.savez (no object arrays)") from None
    if features.ndim < 2 or len(features) != len(target):
        raise UserError(f"features have shape {features.shape} and target {target.shape}; "
                        "expected (N, ...) features and N targets", where=str(path),
                        fix="store one row of features per target value")
    if features.ndim == 3:   # (N, H, W) gray images
        features = features[:, None, :, :]
    return RawData(target=target, where=str(path), array=features)
