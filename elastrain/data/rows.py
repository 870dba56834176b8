"""The data-source seam: the rows of a job's training and validation splits, by index.

A learner asks a source for the rows of its share of each global batch (the sampler draws the
indices, see `elastrain.data.sampler`) and for validation rows in chunks; it never holds a whole
split unless the source does. In-memory arrays (`elastrain.data.dataset.Dataset`) are one source;
a plugin registers others by scheme (`elastrain.plugins.register_source`), chosen by the part of
`data.source` before the colon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from elastrain.plugins import SOURCES, import_plugins
from elastrain.spec import JobSpec

if TYPE_CHECKING:
    from elastrain.data.preprocess import Preprocessor


@runtime_checkable
class DataSource(Protocol):
    """A job's data, read by row index.

    Attributes:
        task: "classification" (targets are class ids, int64) or "regression" (float32 values).
        n_classes: the number of classes (None for regression).
        input_shape: the shape of one sample, (n_features,) or (C, H, W); rows come flattened,
            float32 (N, prod(input_shape)).
        n_train, n_val: rows in the training and validation splits.
        preprocessor: how raw samples become rows and class ids become labels, saved with the
            model (None when the source yields model-ready rows and labels are the ids).
        warnings: what the reader doubts about the data, said to the user before training.
    """

    task: str
    n_classes: int | None
    input_shape: tuple[int, ...]
    preprocessor: Preprocessor | None
    warnings: list[str]

    @property
    def n_train(self) -> int: ...

    @property
    def n_val(self) -> int: ...

    def train_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (len(indices), F) float32 and targets (len(indices),) of training rows `indices` (int64)."""

    def val_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets of validation rows `indices`, as `train_rows`."""

    def feature_variance(self) -> float:
        """The variance of the training features, all values together (an RBF kernel's `gamma: scale`)."""

    def class_counts(self) -> np.ndarray | None:
        """Training rows per class id, int64 (n_classes,); None for regression."""

    def fingerprint(self) -> str:
        """A digest of the training rows as the learner sees them (sha256 hex), the model's lineage."""


def open_source(spec: JobSpec) -> DataSource:
    """The data source `spec.data.source` names: a plugin's for its scheme, else the spec's data
    read whole into memory (`prepare_dataset`).

    Raises:
        UserError: the data cannot be read or does not fit the task.
    """
    import_plugins(spec.plugins)   # a spec that crossed to this process unvalidated (pickled) names them
    plugin = SOURCES.get(spec.data.source_kind)
    if plugin is not None:
        return plugin(spec)
    from elastrain.data.dataset import prepare_dataset

    return prepare_dataset(spec)
