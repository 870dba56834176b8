"""The data-source seam: a member's rows of each global batch, and validation rows in chunks.

A learner asks its source for "my share of the global batch at this position of this epoch" and
for its share of the validation rows; it never holds a whole split unless the source does. In-memory
arrays (`elastrain.data.dataset.Dataset`, read by index through `RowsByIndex`) are one source,
sharded data streamed from storage (`elastrain.data.streaming.ShardedSource`) another; a plugin
registers others by scheme (`elastrain.plugins.register_source`), chosen by the part of
`data.source` before the colon.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from elastrain.data.sampler import global_batch, shard
from elastrain.plugins import SOURCES, import_plugins
from elastrain.spec import JobSpec

if TYPE_CHECKING:
    from elastrain.data.preprocess import Preprocessor


# Validation rows a member scores at once (a CNN's activations for them stay in memory together).
EVAL_CHUNK = 4096


@dataclass(frozen=True)
class Share:
    """A member's rows of one global batch.

    Attributes:
        ids: the rows' sample ids (int64 (n,)): indices into the training split, or row ids of
            sharded data; dropout masks and the exactly-once trace key on them.
        x: features, float32 (n, F).
        y: targets, class ids int64 or values float32 (n,).
        batch: samples in the whole global batch (the last of an epoch may be smaller).
    """

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    batch: int


@runtime_checkable
class DataSource(Protocol):
    """A job's data: each member's share of every global batch, and of the validation rows.

    Attributes:
        task: "classification" (targets are class ids, int64) or "regression" (float32 values).
        n_classes: the number of classes (None for regression).
        input_shape: the shape of one sample, (n_features,) or (C, H, W); rows come flattened,
            float32 (N, prod(input_shape)).
        n_train, n_val: rows in the training and validation splits.
        preprocessor: how raw samples become rows and class ids become labels, saved with the
            model (None when the source yields model-ready rows and labels are the ids).
        warnings: what the reader doubts about the data, said to the user before training.
        bytes_read, wait_s: what this process read from storage so far, and how long its steps
            waited for rows not yet read (0 for data in memory).
    """

    task: str
    n_classes: int | None
    input_shape: tuple[int, ...]
    preprocessor: Preprocessor | None
    warnings: list[str]
    bytes_read: int
    wait_s: float

    @property
    def n_train(self) -> int: ...

    @property
    def n_val(self) -> int: ...

    def share(self, seed: int, epoch: int, position: int, batch_size: int, rank: int, world_size: int) -> Share:
        """Member `rank` of `world_size`'s rows of the global batch of at most `batch_size` samples
        at `position` (samples already consumed) of epoch `epoch`. The batch is a function of
        (seed, epoch, position) alone, and the members' shares are disjoint and cover it.

        Raises:
            UserError: the rows cannot be read (a shard vanished or broke), naming where.
        """

    def batch_ids(self, seed: int, epoch: int, position: int, batch_size: int, rank: int,
                  world_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample ids of that whole global batch and of member `rank`'s share (the trace of
        exactly-once), without reading rows."""

    def val_chunks(self, rank: int, world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Member `rank` of `world_size`'s validation rows, as (features, targets) chunks; the
        members' chunks are disjoint and cover the validation split."""

    def feature_variance(self) -> float:
        """The variance of the training features, all values together (an RBF kernel's `gamma: scale`)."""

    def class_counts(self) -> np.ndarray | None:
        """Training rows per class id, int64 (n_classes,); None for regression."""

    def fingerprint(self) -> str:
        """A digest of the training rows as the learner sees them (sha256 hex), the model's lineage."""


def handed_over(source: DataSource) -> DataSource | None:
    """`source` itself when a driver hands it to its workers whole (rows held in memory: one read
    and preparation per job, where each worker would otherwise repeat it), else None: sharded data
    streamed from storage, or a plugin's source, which each worker opens itself."""
    from elastrain.data.dataset import Dataset

    return source if isinstance(source, Dataset) else None


class RowsByIndex:
    """`share`, `batch_ids` and `val_chunks` for a source that reads its rows by index
    (`train_rows`, `val_rows`, `n_train`, `n_val`): the global batch is a slice of the epoch's
    seeded permutation (`elastrain.data.sampler`), split into contiguous shares."""

    bytes_read = 0   # rows in memory: nothing read while training, no wait
    wait_s = 0.0

    def share(self, seed: int, epoch: int, position: int, batch_size: int, rank: int, world_size: int) -> Share:
        """See `DataSource.share`."""
        batch = global_batch(self.n_train, seed, epoch, position, batch_size)
        mine = shard(batch, rank, world_size)
        x, y = self.train_rows(mine)
        return Share(mine, x, y, len(batch))

    def batch_ids(self, seed: int, epoch: int, position: int, batch_size: int, rank: int,
                  world_size: int) -> tuple[np.ndarray, np.ndarray]:
        """See `DataSource.batch_ids`."""
        batch = global_batch(self.n_train, seed, epoch, position, batch_size)
        return batch, shard(batch, rank, world_size)

    def val_chunks(self, rank: int, world_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """See `DataSource.val_chunks`: a contiguous share of the validation rows, in chunks."""
        mine = shard(np.arange(self.n_val), rank, world_size)
        for chunk in np.array_split(mine, max(1, math.ceil(len(mine) / EVAL_CHUNK))):
            if len(chunk):
                yield self.val_rows(chunk)


def open_source(spec: JobSpec) -> DataSource:
    """The data source `spec.data.source` names: a plugin's for its scheme, shards streamed from
    storage for a glob or URL (`DataSpec.streamed`), else the spec's data read whole into
    memory (`prepare_dataset`).

    Raises:
        UserError: the data cannot be read or does not fit the task.
    """
    import_plugins(spec.plugins)   # a spec that crossed to this process unvalidated (pickled) names them
    plugin = SOURCES.get(spec.data.source_kind)
    if plugin is not None:
        return plugin(spec)
    if spec.data.streamed:
        from elastrain.data.streaming import ShardedSource

        return ShardedSource(spec)
    from elastrain.data.dataset import prepare_dataset

    return prepare_dataset(spec)
