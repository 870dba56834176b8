"""A HIGGS-like table, written as Parquet shards: 28 float32 features and a 0/1 label drawn from a
fixed random teacher network, so that a model can learn it. Seeded: the same arguments write the
same rows.

HIGGS itself (UCI, Baldi et al. 2014) is 11M rows of 28 features and a binary label; this is a
stand-in of any size, made here so that nothing is downloaded.

    python -m bench.higgs_like OUT_FOLDER --rows 1000000 [--shard-rows 250000] [--group-rows 65536]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FEATURES = 28
HIDDEN = 16
BYTES_PER_ROW = 4 * FEATURES + 8   # float32 features, float64 label, before compression


def teacher(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed network that labels rows: weights (28, 16), (16,), and a bias (1,)."""
    rng = np.random.default_rng([seed, 1])
    return (rng.normal(size=(FEATURES, HIDDEN)) / np.sqrt(FEATURES), rng.normal(size=HIDDEN) / np.sqrt(HIDDEN),
            rng.normal(size=1) * 0.1)


def rows(start: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, start + count): features float32 (count, 28) and labels float64 (count,), the
    same whatever the shards are cut into (each block of 65,536 rows has its own generator)."""
    w1, w2, b = teacher(seed)
    xs, ys = [], []
    block = 65_536
    for first in range(start - start % block, start + count, block):
        rng = np.random.default_rng([seed, 2, first // block])
        x = rng.normal(size=(block, FEATURES)).astype(np.float32)
        score = np.tanh(x @ w1) @ w2 + b
        y = (rng.random(block) < 1 / (1 + np.exp(-4 * score))).astype(np.float64)
        lo, hi = max(start, first) - first, min(start + count, first + block) - first
        xs.append(x[lo:hi])
        ys.append(y[lo:hi])
    return np.concatenate(xs), np.concatenate(ys)


def write_shards(folder: Path, total_rows: int, shard_rows: int = 250_000, group_rows: int = 65_536,
                 seed: int = 0) -> list[Path]:
    """Write `total_rows` rows as `part-00000.parquet`, ... of `shard_rows` rows each, in row
    groups of `group_rows` (columns f0..f27 and label); the files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, start in enumerate(range(0, total_rows, shard_rows)):
        x, y = rows(start, min(shard_rows, total_rows - start), seed)
        columns = {f"f{j}": x[:, j] for j in range(FEATURES)} | {"label": y}
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(pa.table(columns), path, row_group_size=group_rows)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the shards into")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in all (default 1,000,000)")
    parser.add_argument("--shard-rows", type=int, default=250_000, help="rows per shard (default 250,000)")
    parser.add_argument("--group-rows", type=int, default=65_536, help="rows per Parquet row group (default 65,536)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_shards(args.out, args.rows, args.shard_rows, args.group_rows, args.seed)
    print(f"wrote {len(written)} shards, {sum(p.stat().st_size for p in written) / 1e6:.1f} MB, to {args.out}")


if __name__ == "__main__":
    main()
