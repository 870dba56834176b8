"""Fitting the preprocessing of a raw table a block at a time: each block's partial statistics,
merged exactly into one, and the plan they give (`elastrain.data.plan.PreparePlan`).

Counts and levels add exactly. Means and sums of squared deviations merge by Chan, Golub and
LeVeque's pairwise update (1979) in float64, in the blocks' order, so the fit equals a
single-process fit up to floating-point rounding (about 1e-15 relative), and the same input gives
the same bits however many workers computed the blocks. Pure functions over plain data; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from elastrain.data.plan import MISSING_LEVEL, CategoricalFit, NumericFit, PreparePlan, population_std
from elastrain.data.streaming import seeded_draw
from elastrain.errors import UserError
from elastrain.spec import ColumnSpec, JobSpec

if TYPE_CHECKING:
    import pyarrow as pa

# Distinct target values kept count of; a target with more is a quantity (regression).
MAX_CLASSES = 1000
# An integral target with more distinct values than both of these is a quantity, as in memory.
MANY_VALUES = 20
MANY_VALUES_SHARE = 0.05
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Moments:
    """Non-blank values of a numeric column: count, mean, sum of squared deviations (float64)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, other: Moments) -> Moments:
        """Both parts together (Chan, Golub and LeVeque 1979)."""
        if not other.count or not self.count:
            return self if other.count == 0 else other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(count, self.mean + delta * other.count / count,
                       self.m2 + other.m2 + delta * delta * self.count * other.count / count)


@dataclass(frozen=True)
class BlockStats:
    """What one block of raw rows adds to the fit (its training rows only).

    Attributes:
        rows: the block's rows; no_target: those without a target (dropped); validation: those
            with one in the validation split.
        moments: per numeric column, its non-blank values' moments.
        levels: per categorical column, training rows per level.
        blanks: per feature column, its blank cells among the training rows.
        all_blanks: per feature column, its blank cells among all rows with a target.
        targets: training rows per target value (empty once there are more than MAX_CLASSES).
        many_targets: more than MAX_CLASSES distinct target values.
        integral_targets: every target value is a whole number or text.
    """

    rows: int = 0
    validation: int = 0
    no_target: int = 0
    moments: dict[str, Moments] = field(default_factory=dict)
    levels: dict[str, dict[str, int]] = field(default_factory=dict)
    blanks: dict[str, int] = field(default_factory=dict)
    all_blanks: dict[str, int] = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    many_targets: bool = False
    integral_targets: bool = True

    def merge(self, other: BlockStats) -> BlockStats:
        """Both blocks' statistics together (`self`'s block first)."""
        targets = _add_counts(self.targets, other.targets)
        many = self.many_targets or other.many_targets or len(targets) > MAX_CLASSES
        return BlockStats(
            rows=self.rows + other.rows, validation=self.validation + other.validation,
            no_target=self.no_target + other.no_target,
            moments={name: self.moments.get(name, Moments()).merge(other.moments.get(name, Moments()))
                     for name in {**self.moments, **other.moments}},
            levels={name: _add_counts(self.levels.get(name, {}), other.levels.get(name, {}))
                    for name in {**self.levels, **other.levels}},
            blanks=_add_counts(self.blanks, other.blanks), all_blanks=_add_counts(self.all_blanks, other.all_blanks),
            targets={} if many else targets, many_targets=many,
            integral_targets=self.integral_targets and other.integral_targets)

    def to_json(self) -> str:
        """The statistics as JSON (floats round-trip exactly); `from_json` reads them back."""
        return json.dumps({"rows": self.rows, "validation": self.validation, "no_target": self.no_target,
                           "moments": {k: [m.count, m.mean, m.m2] for k, m in self.moments.items()},
                           "levels": self.levels, "blanks": self.blanks, "all_blanks": self.all_blanks,
                           "targets": [[k, v] for k, v in self.targets.items()],
                           "many_targets": self.many_targets, "integral_targets": self.integral_targets})

    @classmethod
    def from_json(cls, text: str) -> BlockStats:
        raw = json.loads(text)
        return cls(rows=raw["rows"], validation=raw["validation"], no_target=raw["no_target"],
                   moments={k: Moments(*v) for k, v in raw["moments"].items()}, levels=raw["levels"],
                   blanks=raw["blanks"], all_blanks=raw["all_blanks"], targets={k: v for k, v in raw["targets"]},
                   many_targets=raw["many_targets"], integral_targets=raw["integral_targets"])


def _add_counts(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, count in b.items():
        out[key] = out.get(key, 0) + count
    return out


def row_hashes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's raw values in `columns` (uint64 (n,)), the same in any process
    and whatever block the row is read in (pandas' `hash_array`, SipHash with a fixed key)."""
    from pandas.util import hash_array

    hashes = np.zeros(table.num_rows, np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            hashes = hashes * _GOLDEN + _value_hashes(table.column(name), hash_array)
    return hashes


def _value_hashes(column: pa.ChunkedArray, hash_array) -> np.ndarray:
    """`hash_array` of each value of `column` (a null hashes as None). A string column with few
    distinct values hashes each distinct value once (the same hashes, without a Python string per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        if len(column) and pc.count_distinct(column.slice(0, 1000)).as_py() < 200:
            encoded = pc.dictionary_encode(column).combine_chunks()
            distinct = np.append(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object), None)
            return hash_array(distinct, categorize=False)[
                encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()]
        return hash_array(column.to_numpy(zero_copy_only=False).astype(object), categorize=False)
    values = column.to_numpy(zero_copy_only=False)
    return hash_array(values if values.dtype.kind != "O" else values.astype(object), categorize=False)


def hashed_columns(numeric: list[str], categorical: list[str], text: tuple[str, ...] | list[str], target: str
                   ) -> list[str]:
    """The columns whose values draw a row's split, in hashing order."""
    return [*numeric, *categorical, *text, target]


def validation_rows(table: pa.Table, columns: list[str], seed: int, fraction: float) -> np.ndarray:
    """Which rows are in the validation split: their hash, drawn with `seed` below `fraction`
    (`elastrain.data.streaming.seeded_draw`); equal rows fall on the same side."""
    return seeded_draw(row_hashes(table, columns), seed, fraction)


def block_stats(table: pa.Table, numeric: list[str], categorical: list[str], target: str, seed: int,
                fraction: float, text: tuple[str, ...] = ()) -> BlockStats:
    """The statistics one block of raw rows adds (see `BlockStats`); numeric columns float64,
    categorical ones strings, blanks null; text columns count only in the split's hash."""
    import pyarrow.compute as pc

    validation = validation_rows(table, hashed_columns(numeric, categorical, text, target), seed, fraction)
    has_target = ~table.column(target).is_null().to_numpy(zero_copy_only=False)
    train = table.filter(~validation & has_target)
    labelled = table.filter(has_target)
    all_blanks = {name: labelled.column(name).null_count for name in (*numeric, *categorical)}
    moments, blanks, levels = {}, {}, {}
    for name in numeric:
        values = train.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        values = values[~np.isnan(values)]
        blanks[name] = train.num_rows - len(values)
        mean = float(values.mean()) if len(values) else 0.0
        moments[name] = Moments(len(values), mean, float(((values - mean) ** 2).sum()))
    for name in categorical:
        column = train.column(name)
        blanks[name] = column.null_count
        counts = pc.value_counts(column.drop_null())
        levels[name] = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                strict=True))
    found = pc.value_counts(train.column(target))
    values = found.field("values").to_pylist()
    many = len(values) > MAX_CLASSES
    integral = all(isinstance(v, str) or float(v).is_integer() for v in values)
    return BlockStats(rows=table.num_rows, validation=int((validation & has_target).sum()),
                      no_target=int((~has_target).sum()), moments=moments, levels=levels,
                      blanks=blanks, all_blanks=all_blanks,
                      targets={} if many else dict(zip(values, found.field("counts").to_pylist(), strict=True)),
                      many_targets=many, integral_targets=integral)


def merge_all(parts: list[BlockStats]) -> BlockStats:
    """The blocks' statistics merged in their order."""
    merged = BlockStats()
    for part in parts:
        merged = merged.merge(part)
    return merged


def plan_of(stats: BlockStats, spec: JobSpec, numeric: list[str], categorical: list[str], seed: int
            ) -> PreparePlan:
    """The preprocessing the merged statistics give (see `elastrain.data.plan`).

    Raises:
        UserError: a policy that does not fit its column's type, or a classification target with
            more than MAX_CLASSES values.
    """
    data = spec.data
    fits_numeric = []
    for name in numeric:
        policy = missing_policy(data.columns.get(name), "numeric", name)
        moments = stats.moments.get(name, Moments())
        # Blanks take the mean, then the column is standardized (as imputing then scaling does):
        # they add rows but no deviation.
        rows = moments.count + (stats.blanks.get(name, 0) if policy == "mean" else 0)
        fits_numeric.append(NumericFit(name, moments.mean, population_std(moments.m2, rows),
                                       moments.mean if policy == "mean" else None))
    fits_categorical = []
    for name in categorical:
        column = data.columns.get(name) or ColumnSpec()
        policy = missing_policy(column, "categorical", name)
        counts = stats.levels.get(name, {})
        levels = sorted(level for level, count in counts.items() if count >= column.min_frequency)
        fill = None
        if policy == "level" and stats.blanks.get(name):
            levels.append(MISSING_LEVEL)
            fill = MISSING_LEVEL
        elif policy == "level":
            fill = MISSING_LEVEL   # no blank in training: a blank later is an unknown level
        elif policy == "most_frequent" and counts:
            top = max(counts.values())
            fill = min(level for level, count in counts.items() if count == top)
        rows = tuple(stats.blanks[name] if level == MISSING_LEVEL else counts[level] for level in levels)
        fits_categorical.append(CategoricalFit(name, tuple(levels), rows, fill, column.unknown == "level"))
    classes = _classes(stats, spec)
    return PreparePlan(tuple(fits_numeric), tuple(fits_categorical), data.target, classes, seed,
                       data.validation_fraction)


def missing_policy(column: ColumnSpec | None, kind: str, name: str) -> str:
    """The missing-value policy of a column of `kind`.

    Raises:
        UserError: a policy that does not apply to the kind.
    """
    policy = (column.missing if column else None) or ("error" if kind == "numeric" else "level")
    allowed = ("error", "mean") if kind == "numeric" else ("error", "most_frequent", "level")
    if policy not in allowed:
        raise UserError(f"column '{name}' is {kind}; its missing-value policy cannot be '{policy}'",
                        where=f"data.columns.{name}.missing", fix=f"use one of {', '.join(allowed)}")
    return policy


def _classes(stats: BlockStats, spec: JobSpec) -> tuple | None:
    """The class labels in id order (sorted), or None for a regression target.

    Raises:
        UserError: classification asked of a target with more than MAX_CLASSES values.
    """
    targets = stats.targets
    if spec.task_from_target:
        text = any(isinstance(value, str) for value in targets)
        distinct = len(targets)
        train_rows = stats.rows - stats.validation - stats.no_target
        classification = not stats.many_targets and (text or (stats.integral_targets and not (
            distinct > MANY_VALUES and distinct > MANY_VALUES_SHARE * train_rows)))
        spec.model.task = "classification" if classification else "regression"
    if spec.task != "classification":
        return None
    if stats.many_targets:
        raise UserError(f"the target '{spec.data.target}' has more than {MAX_CLASSES} distinct values",
                        where=spec.data.source, fix="set model.task: regression, or give a target with fewer classes")
    return tuple(sorted(targets))



def feature_moments(plan: PreparePlan, stats: BlockStats) -> tuple[list[float], list[float]]:
    """Each model-input feature's mean and variance over the training rows, from the statistics:
    a standardized column has mean 0 and variance 1 (blanks take the mean before it is scaled); a
    one-hot column's share p of the rows has mean p and variance p (1 - p); a text column's token
    ids are given 0 and 1 (ids are embedded, not scaled, and were not measured)."""
    rows = max(stats.rows - stats.validation - stats.no_target, 1)
    mean, var = [], []
    for _ in plan.numeric:
        mean.append(0.0)
        var.append(1.0)
    for fit in plan.categorical:
        shares = [count / rows for count in fit.counts]
        if fit.unknown_slot:
            shares.append(1 - sum(shares) - (0 if fit.fill in fit.levels else stats.blanks.get(fit.name, 0) / rows))
        mean += shares
        var += [share * (1 - share) for share in shares]
    for fit in plan.text:   # token ids are embedded, not scaled: not measured
        mean += [0.0] * fit.max_length
        var += [1.0] * fit.max_length
    return mean, var
