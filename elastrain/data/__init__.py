"""Data: reading sources, the seeded split, preprocessing saved with the model, the elastic sampler.

Names are imported on first use, so that `elastrain.data.check` (what `validate` runs) loads
neither pandas nor NumPy unless the source is a table (read by `elastrain.data.tables`, the one
reader of tables).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {"Dataset": "dataset", "prepare_dataset": "dataset", "read_prediction_input": "dataset",
          "DataSource": "rows", "open_source": "rows",
          "Preprocessor": "preprocess"}
__all__ = ["DataSource", "Dataset", "Preprocessor", "open_source", "prepare_dataset", "read_prediction_input"]

if TYPE_CHECKING:
    from elastrain.data.dataset import Dataset, prepare_dataset, read_prediction_input
    from elastrain.data.preprocess import Preprocessor
    from elastrain.data.rows import DataSource, open_source


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'elastrain.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"elastrain.data.{_HOMES[name]}"), name)
