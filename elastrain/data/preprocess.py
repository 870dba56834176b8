"""Preprocessing fitted on the training split and saved with the model.

Tabular features: numeric columns are scaled, categorical columns are one-hot encoded in
place. Categories compare by value (1, 1.0 and "1" are one category, however pandas typed
the column); a blank cell is the category "(missing)"; a category the training data did not
have is an error naming column and row. Array and image features are flattened and scaled.
Class labels are encoded as ids 0..K-1 in sorted order and decoded back for predictions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import numpy as np

from elastrain.data.plan import PreparePlan
from elastrain.errors import UserError

if TYPE_CHECKING:   # imported where tables are read: a worker handed arrays saves its model without pandas
    import pandas as pd

MISSING_CATEGORY = "(missing)"
# A column found categorical with more categories than both of these has about one per row.
MANY_CATEGORIES = 10
MANY_CATEGORIES_SHARE = 0.5
_CURRENCY = "$\u20ac\u00a3\u00a5"
_WITH_UNIT = re.compile(rf"(?P<before>[{_CURRENCY}]?)\s*[+-]?[{_CURRENCY}]?\d+(?:[.,'\u00a0\u202f ]\d+)*"
                        rf"(?P<after>\s*(?:%|\u2030|[{_CURRENCY}]|[^\W\d_][\w/\u00b0]*))?")


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
        csv: the data.csv options training read its CSV with, applied to CSV input too.
        plan: the fitted plan of a folder `elastrain prepare` wrote (`elastrain.data.plan.PreparePlan`
            as a dict), which then turns raw rows into model input in place of the fields above.
    """

    layout: str
    input_shape: tuple[int, ...]
    columns: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    classes: list | None = None
    csv: dict[str, str | None] = field(default_factory=dict)
    plan: dict | None = None

    @property
    def feature_names(self) -> list[str]:
        """Names of the model-input features (`column=category` for one-hot ones)."""
        if self.plan is not None:
            return PreparePlan.from_dict(self.plan).feature_names
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
            UserError: a column is missing, holds a value that is not a number, or a category
                the training data did not have.
        """
        if self.plan is not None:
            plan = PreparePlan.from_dict(self.plan)
            try:
                return plan.features(plan.raw_table(frame))
            except ValueError as exc:
                raise UserError(str(exc), where=where,
                                fix=f"give the raw columns the model was prepared on: {', '.join(plan.columns)}; "
                                    "blanks only where the column's policy fills them") from None
        if self.layout != "table":
            return self.transform_array(frame.to_numpy(), where)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise UserError(f"missing feature column(s) {', '.join(missing)}", where=where,
                            fix=f"give the columns the model was trained on: {', '.join(self.columns)}")
        return self._scaled(_encode(frame, self.columns, self.categories, where, line_offset))

    def transform_rows(self, rows: Any, where: str = "input") -> np.ndarray:
        """Model input (N, F) float32 from raw samples, as the training data held them: a DataFrame;
        records (mappings from column to value, as csv.DictReader gives them); rows of values in
        the training columns' order; or an array shaped like the training samples.

        Raises:
            UserError: the samples do not match the training data's columns or shape, or hold a
                value that is not a number or a category the training data did not have.
        """
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            return self.transform_frame(rows, where)
        if self.layout != "table":
            try:
                array = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError):   # ragged rows, or values that are not numbers
                raise UserError("the samples are not an array of numbers of one shape", where=where,
                                fix=f"give each sample as numbers of shape {tuple(self.input_shape)}") from None
            return self.transform_array(array, where)
        if isinstance(rows, np.ndarray):
            rows = rows.reshape(len(rows), -1)
        records = list(rows)
        if records and isinstance(records[0], Mapping):
            return self.transform_frame(pd.DataFrame.from_records(records), where)
        widths = {len(row) for row in records}
        if widths - {len(self.columns)}:
            raise UserError(f"a row has {max(widths - {len(self.columns)})} values, the model takes "
                            f"{len(self.columns)}", where=where,
                            fix=f"give each row the columns {', '.join(self.columns)} in this order, or pass records "
                                "or a DataFrame with these columns")
        return self.transform_frame(pd.DataFrame(records, columns=self.columns), where)

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
        # Models saved before categories compared by value stored them as pandas printed them ("1.0").
        categories = {column: [category_key(c) for c in values] for column, values in raw["categories"].items()}
        return cls(**{**raw, "input_shape": tuple(raw["input_shape"]), "categories": categories})


def fit_table(frame: pd.DataFrame, categorical: list[str] | None, where: str
              ) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The feature columns, the categories of the categorical ones (by value: see :func:`category_key`),
    and warnings for the user.

    `categorical=None` treats every column with no numeric value as categorical, except that a
    column of numbers written with a unit or symbol (10%, $5, 3 kg) is refused, and a column with
    about as many categories as rows (an id, free text) gets a warning.

    Raises:
        UserError: a named categorical column does not exist, or a column holds numbers with units.
    """
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    auto = categorical is None
    if categorical is None:
        categorical = [c for c in columns if _all_non_numeric(frame[c])]
    unknown = [c for c in categorical if c not in columns]
    if unknown:
        raise UserError(f"data.categorical names column(s) {', '.join(unknown)} that the data does not have",
                        where=where, fix=f"choose among {', '.join(columns)}")
    categories = {c: sorted({category_key(v) for v in frame[c]}) for c in categorical}
    warnings = []
    for column in categorical if auto else []:
        _refuse_numbers_with_units(frame[column], column, where)
        if _one_per_row(len(categories[column]), len(frame)):
            warnings.append(f"{where}: column '{column}' has {len(categories[column])} categories in {len(frame)} "
                            "rows, one-hot encoded: what the model learns of it does not carry to new values (an id "
                            "or free text?); drop the column, or write its numbers plainly if it holds numbers")
    return columns, categories, warnings


def _one_per_row(distinct: int, rows: int) -> bool:
    """Whether a column has (nearly) as many categories as rows."""
    return distinct > MANY_CATEGORIES and distinct >= MANY_CATEGORIES_SHARE * rows


def _refuse_numbers_with_units(series: pd.Series, column: str, where: str) -> None:
    """Refuse a text column whose every value is a number with a currency sign, a percent sign, or
    one and the same unit (10%, $5, 3 kg): read as categories, each value would be its own."""
    texts = [str(v).strip() for v in series.dropna() if str(v).strip()]
    parts = [_WITH_UNIT.fullmatch(text) for text in texts]
    if not texts or not all(parts):
        return
    units = {(p["before"], (p["after"] or "").strip()) for p in parts}
    symbols = any(before or after in ("%", "\u2030", *_CURRENCY) for before, after in units)
    if symbols or (len(units) == 1 and units != {("", "")}):
        raise UserError(f"column '{column}' holds numbers written with a unit or symbol ('{texts[0]}'), which "
                        "would be read as one category per value", where=where,
                        fix=f"write plain numbers (0.1 for 10%) without units, or list '{column}' in "
                            "data.categorical if its values are categories")


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
            blocks.append(_one_hot(frame[column], column, categories[column], where, line_offset))
        else:
            blocks.append(_numeric_column(frame[column], column, where, line_offset)[:, None])
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))


def _one_hot(series: pd.Series, column: str, categories: list[str], where: str, line_offset: int | None
             ) -> np.ndarray:
    index = {category: i for i, category in enumerate(categories)}
    keys = [category_key(v) for v in series]
    unseen = [row for row, key in enumerate(keys) if key not in index]
    if unseen:
        row = unseen[0]
        what = "is blank" if keys[row] == MISSING_CATEGORY else f"has the category '{keys[row]}'"
        raise UserError(f"column '{column}' {what} at {row_place(row, line_offset)}, which the training data did not "
                        f"have (categories: {', '.join(categories[:20])})", where=where,
                        fix="correct or drop that row, or train on data that has this category")
    encoded = np.zeros((len(keys), len(categories)))
    encoded[np.arange(len(keys)), [index[key] for key in keys]] = 1.0
    return encoded


def category_key(value: object) -> str:
    """A categorical value as text that compares by value: 1, 1.0, "1" and "1.00" all give "1",
    1.5 and "1.50" give "1.5", other text stays as it is (stripped); a blank gives "(missing)"."""
    import pandas as pd

    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if not isinstance(value, str) and pd.isna(value):
        return MISSING_CATEGORY
    # repr is the shortest text that reads back as the same float, so 0.1 gives "0.1", not its binary expansion.
    text = repr(float(value)) if isinstance(value, (float, np.floating)) else str(value).strip()
    if not text:
        return MISSING_CATEGORY
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    return format(number.normalize(), "f") if number.is_finite() else text


def row_place(row: int, line_offset: int | None) -> str:
    """Where row `row` (0-based) is, for errors: "data row 3", and ", line 4" when rows have lines."""
    return f"data row {row + 1}" + (f", line {row + line_offset}" if line_offset else "")


def _numeric_column(series: pd.Series, column: str, where: str, line_offset: int | None) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raw = series.iloc[row]
        place = row_place(row, line_offset)
        if pd.isna(raw):
            raise UserError(f"column '{column}' has a missing value at {place}", where=where,
                            fix="fill in or drop rows with missing values")
        raise UserError(f"column '{column}' has the non-numeric value '{raw}' at {place}", where=where,
                        fix=f"fix that value, or list '{column}' in data.categorical to one-hot encode it")
    return values


def _all_non_numeric(series: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    present = series.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").isna().all()


def _check_finite(flat: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(flat)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UserError(f"sample {row} has a missing or infinite value", where=where,
                        fix="fill in or drop samples with missing values")
