"""A seeded mixed table for `elastrain prepare`'s benchmark and tests: numeric columns (one with
blanks), categorical columns (with blanks and a rare level), a binary target; written as CSV parts;
and the scikit-learn preprocessing a user trusts on data that fits, to compare with.

    python -m bench.mixed_table OUT_FOLDER --megabytes 200 [--parts 4] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NUMERIC = [f"x{j}" for j in range(8)]
CATEGORICAL = {"color": ["red", "green", "blue", "violet"], "size": ["S", "M", "L", "XL"],
               "city": [f"city{k:02d}" for k in range(40)]}
LEVEL_WEIGHTS = {"color": [0.5, 0.3, 0.19, 0.01]}
BLANK_NUMERIC = "x0"       # 5 % blank: its policy must be `mean`
BYTES_PER_ROW = 95         # about, as CSV (measured: 146.2 MB for 1,538,460 rows)


def table(rows: int, seed: int):
    """`rows` rows as an Arrow table (blanks are nulls); the label depends on x1, x2 and color."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns = {}
    for j, name in enumerate(NUMERIC):
        values = rng.normal(j, 1 + j, rows).round(6)
        if name == BLANK_NUMERIC:
            values[rng.random(rows) < 0.05] = np.nan
        columns[name] = pa.array(values, from_pandas=True)
    for name, levels in CATEGORICAL.items():
        values = rng.choice(levels, rows, p=LEVEL_WEIGHTS.get(name)).astype(object)
        values[rng.random(rows) < 0.05] = None
        columns[name] = pa.array(values, pa.string())
    signal = columns["x1"].to_numpy() - 1 + 0.5 * columns["x2"].to_numpy() / 3
    signal += np.where(columns["color"].to_numpy(zero_copy_only=False) == "red", 1.0, 0.0)
    columns["label"] = ((signal + rng.normal(0, 1, rows)) > 0.5).astype(np.int64)
    return pa.table(columns)


def write_csv(folder: Path, megabytes: float, parts: int = 4, seed: int = 0) -> list[Path]:
    """About `megabytes` of rows as `parts` CSV files, part-0.csv ... (written once, then reused)."""
    import pyarrow.csv as pcsv

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{index}.csv" for index in range(parts)]
    done = folder / "DONE"
    if not done.exists():
        rows = int(megabytes * 1e6 / BYTES_PER_ROW)
        for index, path in enumerate(paths):
            pcsv.write_csv(table(rows // parts, seed * 1000 + index), path)
        done.write_text(str(rows))
    return paths


def spec(source: str) -> dict:
    """The job whose preprocessing the benchmark prepares: x0's blanks take the mean, the
    categorical columns' blanks are a level of their own."""
    return {"name": "bench-prepare", "data": {"source": source, "target": "label",
                                              "columns": {BLANK_NUMERIC: {"missing": "mean"}}},
            "model": {"kind": "mlp", "hidden": [32]}}


def sklearn_reference():
    """scikit-learn's preprocessing of the same table: the numeric columns imputed with their mean
    and standardized, the categorical ones one-hot (a blank its own category, last; an unseen
    level all zeros), in that order."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())
    return ColumnTransformer([("num", numbers, NUMERIC),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(CATEGORICAL))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--megabytes", type=float, default=200.0)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_csv(args.out, args.megabytes, args.parts, args.seed):
        print(path)


if __name__ == "__main__":
    main()
