"""An exported model run by ONNX Runtime, called like the torch module it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

INPUT, OUTPUT = "features", "scores"   # the names an exported graph gives its input and output


class OnnxModule:
    """The ONNX graph at `path` on ONNX Runtime's CPU provider: called with float32 features
    (N, F) as a torch tensor or numpy array, it returns the scores (N, outputs) as a tensor, as the
    module it was exported from does (see `elastrain.optimize.candidates.export_onnx`).

    Args:
        threads: ONNX Runtime's intra-op threads (default: its own choice, one per core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3   # errors only: its warnings are about graph rewrites
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = features.numpy() if isinstance(features, torch.Tensor) else features
        (scores,) = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(array, dtype=np.float32)})
        return torch.from_numpy(scores)

    def eval(self) -> OnnxModule:
        """Itself (a graph has no training mode): lets it stand where a torch module is expected."""
        return self
