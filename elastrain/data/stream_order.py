"""The order of a sharded epoch: which rows make up each global batch, and which member reads them.

A sharded data set is a list of pieces, each a run of rows that one worker reads at once (a
Parquet row group, a stretch of a `.npy` pair, a whole CSV shard), with its count of training
rows. Epoch `e`'s order is a pure function of (seed, epoch, the pieces' training counts, the
window):

1. the pieces are permuted with the generator seeded by (seed, epoch);
2. the permuted pieces are cut into windows: consecutive pieces, closed once they hold at least
   `window` training rows (the last may hold fewer);
3. each window's training rows are permuted uniformly with the generator seeded by
   (seed, epoch, window index + 1).

Progress is the position in the epoch counted in training samples, as for in-memory data, so any
group of any size agrees on the next global batch, and a resize resumes at the position: no row
is skipped or repeated within an epoch. The rows of a batch are computed by whichever member
reads their piece: at world size W, the piece in slot j of its window belongs to rank j mod W,
so a member reads only its pieces (the mathematics does not care which member computes which row:
every step adds the sums of the members' shares, weighted by their sizes).

Shuffle quality and memory: a window of R rows mixes rows only within itself (like a shuffle
buffer of R rows that is refilled a window at a time); pieces from anywhere in the data set meet
in a window because the pieces are permuted first. A member holds its pieces of the current window
and prefetches those of the next, about 2R / W rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class EpochPlan:
    """Epoch `epoch`'s pieces in order and where its windows start.

    Attributes:
        pieces: piece ids (indices into the data set's pieces) in the epoch's order, int64 (P,).
        window_pieces: where each window's pieces start in `pieces`, and the end, int64 (windows + 1,).
        window_rows: the training rows before each window, and the epoch's total, int64 (windows + 1,).
        piece_rows: the training rows before each piece of `pieces`, and the total, int64 (P + 1,).
    """

    pieces: np.ndarray
    window_pieces: np.ndarray
    window_rows: np.ndarray
    piece_rows: np.ndarray

    @property
    def n_windows(self) -> int:
        """Windows in the epoch."""
        return len(self.window_pieces) - 1

    def window_of(self, position: int) -> int:
        """The window that holds the sample at `position` (0 <= position < the epoch's rows)."""
        return int(np.searchsorted(self.window_rows, position, side="right")) - 1


@lru_cache(maxsize=8)
def epoch_plan(train_counts: tuple[int, ...], seed: int, epoch: int, window: int) -> EpochPlan:
    """The plan of epoch `epoch` (see the module's docstring).

    Args:
        train_counts: training rows per piece, in the data set's order (pieces with none are skipped).
        seed: the job's seed.
        epoch: the epoch, from 0.
        window: training rows a window holds at least (>= 1).
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(len(counts))
    order = order[counts[order] > 0]
    piece_rows = np.concatenate([[0], np.cumsum(counts[order])])
    starts = [0]
    for index in range(1, len(order) + 1):
        if piece_rows[index] - piece_rows[starts[-1]] >= window and index < len(order):
            starts.append(index)
    window_pieces = np.asarray([*starts, len(order)], dtype=np.int64)
    plan = EpochPlan(order.astype(np.int64), window_pieces, piece_rows[window_pieces], piece_rows)
    for array in (plan.pieces, plan.window_pieces, plan.window_rows, plan.piece_rows):
        array.flags.writeable = False
    return plan


@lru_cache(maxsize=4)
def window_order(seed: int, epoch: int, window_index: int, rows: int) -> np.ndarray:
    """The permutation of a window's `rows` training rows, read-only."""
    order = np.random.default_rng([seed, epoch, window_index + 1]).permutation(rows)
    order.flags.writeable = False
    return order


@dataclass(frozen=True)
class BatchPlace:
    """Where each sample of a global batch lies, in batch order.

    Attributes:
        piece: the sample's piece id, int64 (B,).
        row: the sample's index among its piece's training rows, int64 (B,).
        slot: its piece's place within its window (the member that reads it: slot mod world size).
    """

    piece: np.ndarray
    row: np.ndarray
    slot: np.ndarray

    def owned_by(self, rank: int, world_size: int) -> np.ndarray:
        """Which samples member `rank` of `world_size` computes: a bool mask (B,)."""
        return self.slot % world_size == rank


def batch_place(plan: EpochPlan, seed: int, epoch: int, position: int, batch_size: int) -> BatchPlace:
    """Where the samples of the global batch at `position` lie (at most `batch_size`; the epoch's
    last batch may be smaller)."""
    end = min(position + batch_size, int(plan.window_rows[-1]))
    pieces, rows, slots = [], [], []
    while position < end:
        window = plan.window_of(position)
        first, last = int(plan.window_rows[window]), int(plan.window_rows[window + 1])
        stop = min(end, last)
        offsets = window_order(seed, epoch, window, last - first)[position - first:stop - first] + first
        # the place in the epoch's piece order of each sample's piece
        index = np.searchsorted(plan.piece_rows, offsets, side="right") - 1
        pieces.append(plan.pieces[index])
        rows.append(offsets - plan.piece_rows[index])
        slots.append(index - plan.window_pieces[window])
        position = stop
    if not pieces:
        empty = np.zeros(0, np.int64)
        return BatchPlace(empty, empty, empty)
    return BatchPlace(np.concatenate(pieces), np.concatenate(rows), np.concatenate(slots))


def pieces_of(plan: EpochPlan, window: int, rank: int, world_size: int) -> np.ndarray:
    """The piece ids member `rank` of `world_size` reads in window `window` (empty past the last)."""
    if not 0 <= window < plan.n_windows:
        return np.zeros(0, np.int64)
    first, end = int(plan.window_pieces[window]), int(plan.window_pieces[window + 1])
    return plan.pieces[first:end][np.arange(end - first) % world_size == rank]
