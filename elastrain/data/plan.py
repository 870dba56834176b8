"""The fitted preprocessing of a raw table, as plain data: what `elastrain prepare` fits on the
training rows, writes as JSON beside the shards (no pickles) and applies to every row, and what a
model trained on the prepared folder applies to raw rows at predict and serve time.

The features a row becomes, in order: each numeric column standardized, (x - mean) / std with the
population deviation (a constant column's std is taken as 1), then each categorical column one-hot
over its levels (sorted, then the missing level, then the unknown level where asked), as
scikit-learn's `ColumnTransformer([StandardScaler() on the numeric columns, OneHotEncoder() on the
categorical ones])` lays them out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from elastrain.data.text import encode, segment

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MISSING_LEVEL = "(missing)"
UNKNOWN_LEVEL = "(unknown)"


@dataclass(frozen=True)
class NumericFit:
    """A numeric column: its training mean and population standard deviation, and the value a
    blank takes (None: a blank is an error)."""

    name: str
    mean: float
    std: float
    fill: float | None


@dataclass(frozen=True)
class CategoricalFit:
    """A categorical column: its levels in one-hot order (the missing level last where blanks are
    a level), what a blank becomes (`fill`: a level; None: an error), and whether an unknown
    level has a slot of its own (else it is all zeros). `counts`: training rows per level."""

    name: str
    levels: tuple[str, ...]
    counts: tuple[int, ...]
    fill: str | None
    unknown_slot: bool

    @property
    def width(self) -> int:
        """One-hot columns this column becomes."""
        return len(self.levels) + self.unknown_slot


@dataclass(frozen=True)
class TextFit:
    """A text column: how it is segmented (`elastrain.data.text.segment`), its trained
    tokenizer (HuggingFace `tokenizers` JSON) and the ids per text (`max_length`, padded with 0)."""

    name: str
    segment: str
    tokenizer: str
    max_length: int
    vocabulary: int


@dataclass(frozen=True)
class PreparePlan:
    """Everything needed to turn a raw row into model input and its target into a class id.

    Attributes:
        numeric, categorical, text: the feature columns' fits, in output order.
        target: the target column.
        classes: the class labels by id (classification), else None (regression).
        seed, validation_fraction: the split of rows into training and validation (by a hash of
            the row's raw values, `elastrain.prep.fit.validation_rows`).
    """

    numeric: tuple[NumericFit, ...]
    categorical: tuple[CategoricalFit, ...]
    target: str
    classes: tuple | None
    seed: int
    validation_fraction: float
    text: tuple[TextFit, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The raw feature columns a row must have."""
        return [fit.name for fit in (*self.numeric, *self.categorical, *self.text)]

    @property
    def feature_names(self) -> list[str]:
        """The model input's features: numeric columns by name, one-hot ones as `column=level`."""
        names = [fit.name for fit in self.numeric]
        for fit in self.categorical:
            names += [f"{fit.name}={level}" for level in fit.levels]
            names += [f"{fit.name}={UNKNOWN_LEVEL}"] if fit.unknown_slot else []
        for fit in self.text:
            names += [f"{fit.name}[{index}]" for index in range(fit.max_length)]
        return names

    def raw_table(self, frame: pd.DataFrame) -> pa.Table:
        """Raw rows as the plan takes them: numeric columns float64, categorical ones strings,
        blanks (NaN, None, empty text) null.

        Raises:
            ValueError: a column is missing, or a numeric one holds a value that is not a number
                (naming the column).
        """
        import pandas as pd
        import pyarrow as pa

        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)}")
        arrays = []
        for fit in self.numeric:
            values = pd.to_numeric(frame[fit.name].replace("", None), errors="coerce")
            bad = values.isna() & frame[fit.name].notna() & (frame[fit.name] != "")
            if bad.any():
                raise ValueError(f"column '{fit.name}' holds {frame[fit.name][bad].iloc[0]!r}, not a number")
            arrays.append(pa.array(values.to_numpy(np.float64), from_pandas=True))
        for fit in (*self.categorical, *self.text):
            text = [None if value is None or value == "" or (isinstance(value, float) and np.isnan(value))
                    else str(value) for value in frame[fit.name].tolist()]
            arrays.append(pa.array(text, pa.string()))
        return pa.table(arrays, names=self.columns)

    def features(self, table: pa.Table, order: str = "C") -> np.ndarray:
        """Model input (n, F) float32 from a raw table with the plan's columns (numeric columns
        float64, categorical ones strings; nulls are blanks), in numpy memory `order` (`F`: each
        feature's column contiguous, for writing columns without a copy).

        Raises:
            ValueError: a blank where the column's policy is `error` (naming the column and the
                row's index within `table`).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        out = np.zeros((table.num_rows, len(self.feature_names)), np.float32, order=order)
        for j, fit in enumerate(self.numeric):
            column = _filled(table.column(fit.name), fit.fill, fit.name)
            values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            out[:, j] = (values - fit.mean) / fit.std
        start = len(self.numeric)
        for fit in self.categorical:
            column = _filled(table.column(fit.name), fit.fill, fit.name)
            codes = pc.index_in(column, value_set=pa.array(fit.levels, pa.string()))
            if fit.unknown_slot:
                codes = pc.fill_null(codes, len(fit.levels))
            codes = codes.to_numpy(zero_copy_only=False)
            hit = ~np.isnan(codes) if codes.dtype.kind == "f" else np.ones(len(codes), bool)
            out[np.flatnonzero(hit), start + codes[hit].astype(np.int64)] = 1.0
            start += fit.width
        for fit in self.text:   # ids below 2**24 are exact in float32
            texts = segment(table.column(fit.name).to_pylist(), fit.segment)
            out[:, start:start + fit.max_length] = encode(fit.tokenizer, texts, fit.max_length)
            start += fit.max_length
        return out

    def to_json(self) -> str:
        """The plan as JSON (`from_json` reads it back)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PreparePlan:
        """A plan written by `to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: dict) -> PreparePlan:
        """A plan from `dataclasses.asdict` of one (the parsed JSON of `to_json`)."""
        return cls(numeric=tuple(NumericFit(**fit) for fit in raw["numeric"]),
                   categorical=tuple(CategoricalFit(**{**fit, "levels": tuple(fit["levels"]),
                                                        "counts": tuple(fit["counts"])})
                                     for fit in raw["categorical"]),
                   target=raw["target"], classes=None if raw["classes"] is None else tuple(raw["classes"]),
                   seed=raw["seed"], validation_fraction=raw["validation_fraction"],
                   text=tuple(TextFit(**fit) for fit in raw.get("text", ())))


def population_std(m2: float, count: int) -> float:
    """sqrt(m2 / count), or 1 for a constant (or empty) column, as scikit-learn's StandardScaler
    leaves such a column unscaled."""
    std = math.sqrt(m2 / count) if count else 0.0
    return std if std > 0 else 1.0


def _filled(column: pa.ChunkedArray, fill: float | str | None, name: str) -> pa.ChunkedArray:
    """`column` with its blanks (nulls) replaced by `fill`.

    Raises:
        ValueError: a blank and no `fill` (naming the first blank's row index and the column).
    """
    import pyarrow.compute as pc

    if not column.null_count:
        return column
    if fill is None:
        first = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"row {first}: column '{name}' is blank")
    return pc.fill_null(column, fill)
