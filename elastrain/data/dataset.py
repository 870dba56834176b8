"""A job's data, ready to train on: split, preprocessed, labels encoded."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elastrain.data.preprocess import (
    Preprocessor,
    category_key,
    encode_features,
    fit_scaling,
    fit_table,
    flatten_samples,
    row_place,
)
from elastrain.data.rows import RowsByIndex
from elastrain.errors import UserError
from elastrain.spec import CsvSpec, DataSpec, JobSpec

# The readers (and pandas) are imported where data is read and prepared: a worker handed a
# prepared `Dataset` by its driver unpickles it without them.
if TYPE_CHECKING:
    from elastrain.data.sources import RawData

# A target with more distinct values than both of these is a quantity rather than classes.
MANY_VALUES = 20
MANY_VALUES_SHARE = 0.05
# Text labels among numeric ones on at most this share of the rows look like stray values.
STRAY_SHARE = 0.05
# A number written the plain way (no leading zero, sign or exponent): its class is its value.
_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d*)?")


@dataclass
class Dataset(RowsByIndex):
    """Training and validation data: float32 features (N, F), targets as class ids (int64)
    or values (float32), the fitted preprocessing, and warnings for the user about the data."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str
    n_classes: int | None
    input_shape: tuple[int, ...]
    preprocessor: Preprocessor
    warnings: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        """Rows in the training split."""
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        """Rows in the validation split."""
        return len(self.y_val)

    def train_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets of training rows `indices` (see `elastrain.data.rows.DataSource`)."""
        return self.x_train[indices], self.y_train[indices]

    def val_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets of validation rows `indices`."""
        return self.x_val[indices], self.y_val[indices]

    def feature_variance(self) -> float:
        """The variance of the training features, all values together."""
        return float(self.x_train.var())

    def class_counts(self) -> np.ndarray | None:
        """Training rows per class id (None for regression)."""
        if self.n_classes is None:
            return None
        return np.bincount(self.y_train, minlength=self.n_classes)

    def fingerprint(self) -> str:
        """sha256 of the preprocessed training arrays."""
        return hashlib.sha256(self.x_train.tobytes() + self.y_train.tobytes()).hexdigest()


def prepare_dataset(spec: JobSpec) -> Dataset:
    """Read the spec's data, split it with its seed, and fit preprocessing on the training split.

    When the spec leaves the task to the target (`spec.task_from_target`), this sets
    `spec.model.task` to the one :func:`infer_task` gives, so that the spec's loss follows it.

    Raises:
        UserError: the data cannot be read or does not fit the task.
    """
    from elastrain.data.sources import read_source

    data = spec.data
    seed = data.split_seed if data.split_seed is not None else spec.train.seed
    raw = read_source(data, spec.train.seed)
    if spec.task_from_target:
        spec.model.task = infer_task(raw.target)
    warnings = list(raw.warnings)
    y, classes = _encode_target(raw.target, spec.task, raw.where, data.target, raw.line_offset, warnings)
    train_rows, val_rows = _split(len(y), y if classes else None, data.validation_fraction, seed, raw.where)
    if classes:
        warnings += _validation_only(classes, y[train_rows], y[val_rows], raw.where, data.target)
    per_feature = data.scaling_per == "feature" or (data.scaling_per == "auto" and not raw.is_image)

    if raw.frame is not None:
        # Categories come from all rows, so that a rare one the split put in validation only is no error.
        columns, categories, said = fit_table(raw.frame, data.categorical, raw.where)
        warnings += said
        flat, numeric = encode_features(raw.frame, columns, categories, raw.where, raw.line_offset)
        input_shape: tuple[int, ...] = (flat.shape[1],)
        layout = "table"
    else:
        columns, categories = [], {}
        input_shape = tuple(int(d) for d in raw.array.shape[1:])
        flat = flatten_samples(raw.array, input_shape, raw.where)
        numeric = np.ones(flat.shape[1], bool)
        layout = "array"
    center, scale = fit_scaling(flat[train_rows], data.scaling, per_feature, numeric)
    preprocessor = Preprocessor(layout, input_shape, columns, categories, center, scale, classes,
                                data.csv.model_dump())
    scaled = ((flat - np.asarray(center)) / np.asarray(scale)).astype(np.float32)
    return Dataset(x_train=scaled[train_rows], y_train=y[train_rows], x_val=scaled[val_rows], y_val=y[val_rows],
                   task=spec.task, n_classes=len(classes) if classes else None, input_shape=input_shape,
                   preprocessor=preprocessor, warnings=warnings)


def check_table(raw: RawData, data: DataSpec) -> list[str]:
    """What training would refuse in a table, short of splitting and scaling it (for `validate`):
    the target's values, the categories, the numbers. The task is the data source's, else the
    target's (validate does not ask the model).

    Returns:
        The warnings training would give, but those about the split.

    Raises:
        UserError: what `prepare_dataset` raises for these rows.
    """
    warnings = list(raw.warnings)
    task = data.task or infer_task(raw.target)
    _encode_target(raw.target, task, raw.where, data.target, raw.line_offset, warnings)
    columns, categories, said = fit_table(raw.frame, data.categorical, raw.where)
    encode_features(raw.frame, columns, categories, raw.where, raw.line_offset)
    return warnings + said


def read_prediction_input(path: Path, preprocessor: Preprocessor) -> np.ndarray:
    """Model input from a .csv, .parquet or .npz (array `X`) file of new samples.

    Raises:
        UserError: the file is missing or its features do not match the model's.
    """
    from elastrain.data.tables import read_table, table_format

    where = str(path)
    if not path.is_file():
        raise UserError("input file not found", where=where, fix="check the --input path")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise UserError(f"no array named 'X' (arrays: {', '.join(archive.files)})", where=where,
                                fix="save the features as X, e.g. numpy.savez(path, X=features)")
            features = archive["X"]
        return preprocessor.transform_rows(features, where)
    fmt = table_format(path)
    frame = read_table(path, CsvSpec.model_validate(preprocessor.csv), fmt).frame
    return preprocessor.transform_frame(frame, where, 2 if fmt == "csv" else None)


def read_kept_columns(path: Path, preprocessor: Preprocessor, names: list[str]) -> dict[str, list]:
    """The input columns `names` of a .csv or .parquet file of new samples, to copy beside the
    predictions (an id, say): {name: values}, in the order given.

    Raises:
        UserError: a column is not in the file, or the file is an .npz (it has no named columns).
    """
    from elastrain.data.tables import read_table, table_format

    if not names:
        return {}
    if path.suffix == ".npz":
        raise UserError("an .npz input has no named columns to keep", where="--keep",
                        fix="give the input as CSV or Parquet, or leave out --keep")
    frame = read_table(path, CsvSpec.model_validate(preprocessor.csv), table_format(path)).frame
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise UserError(f"no column {', '.join(repr(n) for n in missing)} in the input "
                        f"(columns: {', '.join(str(c) for c in frame.columns[:20])})", where=str(path),
                        fix="name columns of the input file with --keep")
    return {name: frame[name].tolist() for name in names}


def infer_task(target: np.ndarray) -> str:
    """`regression` for a numeric target with a non-integer value or with many distinct values (more
    than MANY_VALUES and more than MANY_VALUES_SHARE of the rows), else `classification`."""
    import pandas as pd

    numeric = pd.to_numeric(pd.Series(target), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(numeric).any():   # text labels (a missing target is reported when it is encoded)
        return "classification"
    if (numeric != np.round(numeric)).any() or _many(len(np.unique(numeric)), len(numeric)):
        return "regression"
    return "classification"


def _many(distinct: int, rows: int) -> bool:
    return distinct > MANY_VALUES and distinct > MANY_VALUES_SHARE * rows


def encode_target(target: np.ndarray, task: str, classes: list | None, where: str, name: str,
                  line_offset: int | None) -> np.ndarray:
    """Targets read elsewhere (a federated client's rows) encoded as a data set with class labels
    `classes` encoded its own: class ids into `classes` (classification), or float32 values.

    Raises:
        UserError: a target is missing or not a number where one is needed, or a class label
            `classes` lacks.
    """
    values, labels = _encode_target(target, task, where, name, line_offset, [])
    if task != "classification":
        return values
    index = {str(label): i for i, label in enumerate(classes or [])}
    unknown = [str(label) for label in labels if str(label) not in index]
    if unknown:
        raise UserError(f"target '{name}' holds class(es) the job does not have: {', '.join(unknown[:5])}",
                        where=where, fix=f"keep to the job's classes: {', '.join(index)}")
    return np.array([index[str(label)] for label in labels], np.int64)[values]


def _encode_target(target: np.ndarray, task: str, where: str, name: str, line_offset: int | None,
                   warnings: list[str]) -> tuple[np.ndarray, list | None]:
    """Targets as class ids with the class labels (classification), or as float32 values.

    Labels compare by value (1, 1.0 and "1" are one class); see :func:`_class_labels` for how a
    class's label reads. A few text labels among numeric ones add a warning naming one and its row.
    """
    import pandas as pd

    present = pd.notna(target)
    if not present.all():
        row = int(np.argmin(present))
        raise UserError(f"target '{name}' is missing at {row_place(row, line_offset)}", where=where,
                        fix="fill in or drop rows without a target")
    numeric = pd.to_numeric(pd.Series(target), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if task == "regression":
        if np.isnan(numeric).any():
            bad = target[int(np.argmax(np.isnan(numeric)))]
            raise UserError(f"regression needs a numeric target, but '{name}' holds '{bad}'", where=where,
                            fix="use a classification model (e.g. softmax, logistic, mlp) or a numeric target")
        return numeric.astype(np.float32), None
    text = np.isnan(numeric)
    if not text.any():
        fractional = numeric != np.round(numeric)
        if fractional.any():
            raise UserError(f"classification needs class labels, but target '{name}' holds the value "
                            f"{numeric[int(np.argmax(fractional))]:g}", where=where,
                            fix="use model linear (or set model.task: regression) for a continuous target")
    elif text.sum() <= STRAY_SHARE * len(text) and not text.all():
        row = int(np.argmax(text))
        warnings.append(f"{where}: target '{name}' holds numbers, and '{str(target[row]).strip()}' at "
                        f"{row_place(row, line_offset)} ({int(text.sum())} such row(s)): it is trained as a class of "
                        "its own; correct or drop these rows if they are mistakes")
    classes, ids = _class_labels(target)
    if len(classes) < 2:
        raise UserError(f"target '{name}' has only one class ({classes[0]})", where=where,
                        fix="classification needs at least two classes in the data")
    if _many(len(classes), len(ids)):
        warnings.append(f"{where}: target '{name}' has {len(classes)} classes in {len(ids)} rows; if it is a "
                        "quantity, set model.task: regression (or use model linear)")
    return ids, classes


def _class_labels(target: np.ndarray) -> tuple[list, np.ndarray]:
    """The class labels, numbers by value then text in order, and each row's class id.

    A class reads as the data writes it ("01", "NA", "cat") unless the data writes it several ways
    (1 and 1.0) or as a plain number: then as its value. When every class is an integer value the
    labels are ints, else text.
    """
    import pandas as pd

    codes, distinct = pd.factorize(pd.Series(target, dtype=object))   # each distinct value once, not each row
    keys = [category_key(value) for value in distinct]
    written: dict[str, set[str]] = {}
    for value, key in zip(distinct, keys, strict=True):
        written.setdefault(key, set()).add(repr(float(value)) if isinstance(value, float | np.floating)
                                            else str(value).strip())
    labels = {key: next(iter(texts)) if len(texts) == 1 and not _PLAIN_NUMBER.fullmatch(next(iter(texts)))
              else key for key, texts in written.items()}
    order = sorted(written, key=_class_order)
    if all(_PLAIN_NUMBER.fullmatch(labels[key]) and "." not in labels[key] for key in order):
        shown: list = [int(labels[key]) for key in order]
    else:
        shown = [labels[key] for key in order]
    position = {key: i for i, key in enumerate(order)}
    return shown, np.array([position[key] for key in keys], dtype=np.int64)[codes]


def _class_order(key: str) -> tuple:
    """Numbers first, by value; then text, alphabetically."""
    try:
        number = Decimal(key)
    except InvalidOperation:
        number = None
    return (0, number, "") if number is not None and number.is_finite() else (1, Decimal(0), key)


def _validation_only(classes: list, y_train: np.ndarray, y_val: np.ndarray, where: str, name: str) -> list[str]:
    """A warning naming the classes the split put in the validation rows only (the model cannot learn them)."""
    only = sorted(set(y_val.tolist()) - set(y_train.tolist()))
    if not only:
        return []
    shown = ", ".join(f"'{classes[i]}'" for i in only[:10])
    return [f"{where}: class(es) {shown} of target '{name}' are in the validation split only, so the model never "
            "sees them in training; add rows of these classes, or drop them"]


def _split(n: int, labels: np.ndarray | None, fraction: float, seed: int, where: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / validation row indices, stratified by class when every class has two samples."""
    # Here, not at the top: a worker given its rows by the driver never splits, and importing
    # scikit-learn costs a new process ~1.9 CPU-s.
    from sklearn.model_selection import train_test_split

    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise UserError(f"{n} samples cannot be split with validation_fraction {fraction}", where=where,
                        fix="use more data or another data.validation_fraction")
    rows = np.arange(n)
    stratify = None
    if labels is not None:
        counts = np.bincount(labels)
        if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
            stratify = labels
    train_rows, val_rows = train_test_split(rows, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train_rows), np.sort(val_rows)
