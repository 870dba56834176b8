"""Preprocessing fitted on the training split and saved with the model.

Tabular features: numeric columns are scaled, categorical columns are one-hot encoded in
place (a category not seen in training encodes as all zeros). Array and image features are
flattened and scaled. Class labels are encoded as ids 0..K-1 in sorted order and decoded
back for predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from elastrain.errors import UserError

MISSING_CATEGORY = "(missing)"


@dataclass
class Preprocessor:
    """Everything `predict` needs to turn raw input into model input, and ids into labels.

    Attributes:
        layout: "table" (named columns) or "array" (N, ...) input.
        input_shape: the shape of one preprocessed sample, (F,) or (C, H, W).
        columns: the feature columns in input order (table layout).
        categories: each categorical column's categories, in encoding order.
        center, scale: per model-input feature, or one value for global scaling.
        classes: the class labels, index = class id (classification), else None.
    """

    layout: str
    input_shape: tuple[int, ...]
    columns: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    classes: list | None = None

    @property
    def feature_names(self) -> list[str]:
        """Names of the model-input features (`column=category` for one-hot ones)."""
        names: list[str] = []
        for column in self.columns:
            if column in self.categories:
                names += [f"{column}={c}" for c in self.categories[column]]
            else:
                names.append(column)
        return names

    def transform_frame(self, frame: pd.DataFrame, where: str = "input", line_offset: int | None = None
                        ) -> np.ndarray:
        """Model input (N, F) float32 from a table with this preprocessor's columns (others are ignored).

        Raises:
            UserError: a column is missing or holds a value that is not a number.
        """
        if self.layout != "table":
            return self.transform_array(frame.to_numpy(), where)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise UserError(f"missing feature column(s) {', '.join(missing)}", where=where,
                            fix=f"give the columns the model was trained on: {', '.join(self.columns)}")
        return self._scaled(_encode(frame, self.columns, self.categories, where, line_offset))

    def transform_array(self, features: np.ndarray, where: str = "input") -> np.ndarray:
        """Model input (N, F) float32 from an array of samples shaped like the training data.

        Raises:
            UserError: the samples have the wrong size or are not numbers.
        """
        return self._scaled(flatten_samples(features, self.input_shape, where))

    def _scaled(self, flat: np.ndarray) -> np.ndarray:
        return ((flat - np.asarray(self.center)) / np.asarray(self.scale)).astype(np.float32)

    def decode(self, ids: np.ndarray) -> list:
        """The original labels of class ids."""
        assert self.classes is not None
        return [self.classes[int(i)] for i in ids]

    def to_dict(self) -> dict:
        """A JSON-serializable form, read back by :meth:`from_dict`."""
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> Preprocessor:
        """The preprocessor :meth:`to_dict` described."""
        return cls(**{**raw, "input_shape": tuple(raw["input_shape"])})


def fit_table(frame: pd.DataFrame, categorical: list[str] | None, where: str, line_offset: int | None
              ) -> tuple[list[str], dict[str, list[str]]]:
    """The feature columns and the categories of the categorical ones, learnt from training rows.

    `categorical=None` treats every column with no numeric value as categorical.

    Raises:
        UserError: a named categorical column does not exist.
    """
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    if categorical is None:
        categorical = [c for c in columns if _all_non_numeric(frame[c])]
    unknown = [c for c in categorical if c not in columns]
    if unknown:
        raise UserError(f"data.categorical names column(s) {', '.join(unknown)} that the data does not have",
                        where=where, fix=f"choose among {', '.join(columns)}")
    categories = {c: sorted(set(_category_values(frame[c]))) for c in categorical}
    return columns, categories


def fit_scaling(flat: np.ndarray, scaling: str, per_feature: bool, numeric: np.ndarray
                ) -> tuple[list[float], list[float]]:
    """Center and scale for model-input features, fitted on training rows `flat` (N, F).

    Only features where `numeric` is True are scaled (one-hot features keep 0/1); a
    constant feature gets scale 1.
    """
    width = flat.shape[1]
    center, scale = np.zeros(width), np.ones(width)
    if scaling != "none" and numeric.any():
        values = flat[:, numeric]
        axis = 0 if per_feature else None
        if scaling == "standardize":
            low, spread = values.mean(axis=axis), values.std(axis=axis)
        else:
            low = values.min(axis=axis)
            spread = values.max(axis=axis) - low
        spread = np.where(spread > 0, spread, 1.0)
        center[numeric], scale[numeric] = low, spread
    if not per_feature and scaling != "none" and numeric.all():
        return [float(center[0])], [float(scale[0])]
    return center.tolist(), scale.tolist()


def flatten_samples(features: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Samples (N, *input_shape) as finite float64 rows (N, F).

    Raises:
        UserError: the samples have the wrong size, are not numbers, or are missing.
    """
    width = int(np.prod(input_shape))
    if features.ndim < 2 or int(np.prod(features.shape[1:])) != width:
        raise UserError(f"samples have shape {features.shape[1:]}, the model expects {input_shape}",
                        where=where, fix="give features in the layout the model was trained on")
    try:
        flat = features.reshape(len(features), width).astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"features of type {features.dtype} are not numbers", where=where,
                        fix="store numeric features") from None
    _check_finite(flat, where)
    return flat


def encode_features(frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]], where: str,
                    line_offset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled model input (N, F) float64 and a mask of its numeric (not one-hot) features."""
    flat = _encode(frame, columns, categories, where, line_offset)
    numeric = np.concatenate([np.zeros(len(categories[c]), bool) if c in categories else np.ones(1, bool)
                              for c in columns]) if columns else np.zeros(0, bool)
    return flat, numeric


def _encode(frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]], where: str,
            line_offset: int | None) -> np.ndarray:
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    blocks = []
    for column in columns:
        if column in categories:
            values = np.asarray(_category_values(frame[column]), dtype=object)
            blocks.append((values[:, None] == np.asarray(categories[column], dtype=object)[None, :]).astype(float))
        else:
            blocks.append(_numeric_column(frame[column], column, where, line_offset)[:, None])
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))


def _numeric_column(series: pd.Series, column: str, where: str, line_offset: int | None) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raw = series.iloc[row]
        place = f"data row {row + 1}" + (f", line {row + line_offset}" if line_offset else "")
        if pd.isna(raw):
            raise UserError(f"column '{column}' has a missing value at {place}", where=where,
                            fix="fill in or drop rows with missing values")
        raise UserError(f"column '{column}' has the non-numeric value '{raw}' at {place}", where=where,
                        fix=f"fix that value, or list '{column}' in data.categorical to one-hot encode it")
    return values


def _all_non_numeric(series: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    present = series.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").isna().all()


def _category_values(series: pd.Series) -> list[str]:
    return [MISSING_CATEGORY if pd.isna(v) else str(v) for v in series]


def _check_finite(flat: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(flat)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UserError(f"sample {row} has a missing or infinite value", where=where,
                        fix="fill in or drop samples with missing values")
