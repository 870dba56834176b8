"""A saved XGBoost booster (UBJSON, never pickled) standing where a torch module is expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class BoosterModule:
    """The booster at `path`: called with float32 features (N, F) as a torch tensor or numpy array,
    it returns its margins (N, outputs) as a tensor (a logit for binary classification, one per
    class, or the predicted value), as a network's scores are.

    Args:
        path: a booster saved by XGBoost as UBJSON or JSON.
        threads: XGBoost's threads for prediction (default: one per core).

    Raises:
        xgboost.core.XGBoostError: the file is not a booster.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import xgboost

        self.path = Path(path)
        self.booster = xgboost.Booster(model_file=str(path))
        if threads:
            self.booster.set_param({"nthread": threads})

    def __call__(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = features.numpy() if isinstance(features, torch.Tensor) else features
        margins = self.booster.inplace_predict(np.ascontiguousarray(array, dtype=np.float32), predict_type="margin")
        margins = np.asarray(margins, dtype=np.float32)
        return torch.from_numpy(margins.reshape(len(array), -1))

    def eval(self) -> BoosterModule:
        """Itself (a booster has no training mode)."""
        return self
