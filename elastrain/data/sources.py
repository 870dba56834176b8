"""Reading a data source named in a spec into raw features and a raw target.

Tabular sources (csv, parquet, and the built-in tables) keep their columns as a DataFrame so
that preprocessing can name columns and rows in its errors; image and array sources
(idx, npz, digits) give an ndarray with the shape of one sample.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from elastrain.data.check import missing_target
from elastrain.data.idx import read_idx_folder
from elastrain.errors import UserError
from elastrain.spec import CsvSpec, DataSpec

SEPARATORS = (",", ";", "\t", "|")   # the separators detected, in order of preference
SNIFF_LINES = 20
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_DECIMAL_POINT = re.compile(r"[+-]?\d*\.\d+")


@dataclass
class RawData:
    """Features and target as read, before splitting and preprocessing.

    Exactly one of `frame` (tabular, target removed) and `array` (N, ...) is set.
    `where` names the source in error messages; `line_offset` turns a row index into a
    file line (2 for a CSV with a header), or is None when rows have no lines.
    """

    target: np.ndarray
    where: str
    frame: pd.DataFrame | None = None
    array: np.ndarray | None = None
    line_offset: int | None = None

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
    frame, how = read_table(path, data.csv)
    target = _pop_target(frame, data.target, path, how)
    if frame.shape[1] == 0:
        raise UserError(f"no feature columns: the file has only the target '{data.target}'{how}", where=str(path),
                        fix="add feature columns; if the file has them, set data.csv.sep to its separator")
    return RawData(target=target, where=str(path), frame=frame, line_offset=2 if kind == "csv" else None)


def read_table(path: Path, options: CsvSpec) -> tuple[pd.DataFrame, str]:
    """A CSV or Parquet file as a DataFrame (by its suffix; anything not .parquet is read as CSV).

    Returns:
        The table, and how a CSV was read (" (read with separator ';', decimal ',')"; "" for Parquet)
        for error messages.

    Raises:
        UserError: the file is empty or malformed.
    """
    how = ""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path), how
        sep, decimal = csv_format(path, options)
        how = f" (read with separator {sep!r}, decimal {decimal!r})"
        return pd.read_csv(path, sep=sep, decimal=decimal), how
    except pd.errors.EmptyDataError:
        raise UserError("the file is empty", where=str(path), fix="give a file with a header row and data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the file{how}: {detail}", where=str(path),
                        fix="check that it is a valid CSV (with a header row; data.csv sets separator and decimal "
                            "mark) or Parquet file") from None


def csv_format(path: Path, options: CsvSpec) -> tuple[str, str]:
    """The separator and decimal mark to read a CSV file with: those `options` give, else detected.

    The separator detected is the first of , ; tab | with the most fields that splits the header and
    every one of the next lines into the same number (at least two) of fields, else ','. The decimal
    mark detected is ',' when the separator is not ',' and values like 1,5 appear but none like 1.5.
    """
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        lines = list(itertools.islice(handle, SNIFF_LINES + 1))
    if len(lines) > SNIFF_LINES:   # the last line read may be cut inside a quoted value
        lines.pop()
    sep = options.sep or _detect_separator(lines)
    if options.decimal:
        return sep, options.decimal
    fields = [value.strip() for row in csv.reader(lines, delimiter=sep) for value in row]
    commas = sep != "," and any(_DECIMAL_COMMA.fullmatch(v) for v in fields)
    return sep, "," if commas and not any(_DECIMAL_POINT.fullmatch(v) for v in fields) else "."


def _detect_separator(lines: list[str]) -> str:
    best, best_width = ",", 1
    for sep in SEPARATORS:
        widths = {len(row) for row in csv.reader(lines, delimiter=sep) if row}
        if len(widths) == 1 and (width := widths.pop()) > best_width:
            best, best_width = sep, width
    return best


def _pop_target(frame: pd.DataFrame, target: str, path: Path, how: str) -> np.ndarray:
    if target not in frame.columns:
        raise missing_target(target, [str(c) for c in frame.columns], path, how)
    return frame.pop(target).to_numpy()


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
