"""The XGBoost matrices a tree learner grows and scores on: a member's partition of the training
rows, binned by the job's quantile cuts, and its share of the validation rows.

Data held in memory becomes in-memory matrices. Sharded data is streamed into XGBoost's external
memory (`ExtMemQuantileDMatrix`): a piece at a time, binned and paged to local disk, so that a
worker's memory holds a few pieces rather than its whole share. What still grows with the rows is
XGBoost's per-row state (labels, gradients, cached predictions, the row partition: about 33 bytes
a training row, measured) and AUC's gathered margins (`elastrain.train.tree_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import xgboost  # this module is imported only where a tree model trains

from elastrain.data.rows import DataSource

# Rows a page of external memory holds at least: the validation rows come in small chunks, and a
# page per chunk would make XGBoost fetch thousands of pages a round.
PAGE_ROWS = 1 << 16

Chunks = Iterator[tuple[np.ndarray, np.ndarray]]


@dataclass
class Partition:
    """A member's matrices for one membership of the group.

    Attributes:
        train: its training rows with their labels, binned (an `xgboost.QuantileDMatrix`, or an
            `xgboost.ExtMemQuantileDMatrix` paged to disk).
        val: its validation rows with their targets as labels (an `xgboost.DMatrix`, in memory or
            paged to disk).
    """

    train: object
    val: object

    @property
    def val_targets(self) -> np.ndarray:
        """This member's validation targets, float64 (n,) (class ids as values)."""
        return self.val.get_label().astype(np.float64)


def cut_rows(data: DataSource, streamed: bool, seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The `rows` training rows the quantile cuts are computed from, the same in every process:
    features float32 (rows, F) and targets (rows,). In memory, the first `rows` of the job's seeded
    order; sharded, the first `rows` of the pieces in epoch 0's seeded order (whole pieces drawn
    at random), read a piece at a time."""
    if not streamed:
        share = data.share(seed, 0, 0, rows, 0, 1)
        return share.x, share.y
    taken: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for x, y in data.train_chunks(seed, 0, 1):
        taken.append((x[:rows - count], y[:rows - count]))
        count += len(taken[-1][1])
        if count >= rows:
            break
    return np.concatenate([x for x, _ in taken]), np.concatenate([y for _, y in taken])


def in_memory(data: DataSource, seed: int, rank: int, world_size: int, cuts, max_bin: int, threads: int) -> Partition:
    """Member `rank` of `world_size`'s rows held in memory: its contiguous share of the job's
    seeded order (`DataSource.share` of the whole epoch 0), binned by `cuts` (a QuantileDMatrix of
    `max_bin` bins a feature)."""
    share = data.share(seed, 0, 0, data.n_train, rank, world_size)
    train = xgboost.QuantileDMatrix(share.x, label=share.y, ref=cuts, max_bin=max_bin, nthread=threads)
    chunks = list(data.val_chunks(rank, world_size))
    features = np.concatenate([x for x, _ in chunks]) if chunks else np.zeros((0, cuts.num_col()), np.float32)
    targets = np.concatenate([y for _, y in chunks]) if chunks else np.zeros(0, np.float32)
    return Partition(train, xgboost.DMatrix(features, label=targets, nthread=threads))


def paged(data, seed: int, rank: int, world_size: int, cuts, max_bin: int, threads: int, folder: str) -> Partition:
    """Member `rank` of `world_size`'s rows of sharded data (`ShardedSource`) in XGBoost's external
    memory under `folder`: the pieces it reads over epoch 0 (`ShardedSource.train_chunks`) binned
    by `cuts`, and its validation pieces (`val_chunks`) as they are (raw values, as the in-memory
    matrix holds them). XGBoost reads each more than once (to count, then to page) and deletes its
    pages when the matrix is freed."""
    suffix = f"{rank}-of-{world_size}"
    train = xgboost.ExtMemQuantileDMatrix(_Pages(lambda: data.train_chunks(seed, rank, world_size),
                                                 f"{folder}/train-{suffix}"), ref=cuts, max_bin=max_bin,
                                          nthread=threads)
    val = xgboost.DMatrix(_Pages(lambda: data.val_chunks(rank, world_size), f"{folder}/val-{suffix}"),
                          nthread=threads)
    return Partition(train, val)


def _rebatched(chunks: Chunks, rows: int) -> Chunks:
    """`chunks` joined into batches of at least `rows` rows (the last may hold fewer)."""
    held: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for x, y in chunks:
        held.append((x, y))
        count += len(y)
        if count >= rows:
            yield np.concatenate([c for c, _ in held]), np.concatenate([t for _, t in held])
            held, count = [], 0
    if held:
        yield np.concatenate([c for c, _ in held]), np.concatenate([t for _, t in held])


class _Pages(xgboost.DataIter):
    """The batches of `chunks()` (called again on every pass), at least `PAGE_ROWS` rows each,
    paged to disk under `prefix`."""

    def __init__(self, chunks: Callable[[], Chunks], prefix: str) -> None:
        self.chunks = chunks
        self.batches: Chunks | None = None
        super().__init__(cache_prefix=prefix)

    def next(self, input_data: Callable) -> bool:
        if self.batches is None:
            self.batches = _rebatched(self.chunks(), PAGE_ROWS)
        batch = next(self.batches, None)
        if batch is None:
            return False
        input_data(data=batch[0], label=batch[1])
        return True

    def reset(self) -> None:
        self.batches = None
