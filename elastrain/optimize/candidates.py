"""The optimized variants of a trained model that `elastrain optimize` measures: ONNX Runtime
float32, dynamic and static (QDQ) int8; torchao int8; and, pruned by torch-pruning (channels and
hidden units removed, then fine-tuned), the same ONNX forms. Each is written to a work folder in
the file format it would ship in."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from elastrain.models.onnx_runtime import INPUT, OUTPUT, OnnxModule
from elastrain.models.quiet import quiet
from elastrain.train.losses import loss_sum

ONNX_OPSET = 18


@dataclass(frozen=True)
class Candidate:
    """One variant of the model.

    Attributes:
        name: what the report calls it, e.g. `onnx-int8-static`.
        format: how it is saved and loaded (`elastrain.train.artifact.WEIGHTS`): torch,
            torchao-int8 or onnx.
        weights: its weights file (model.pt or model.onnx).
        network: scores float32 features (N, F) as the source model does: a torch module or an
            `OnnxModule`.
        how: one line on how it was made (calibration samples, pruning ratio, ...).
    """

    name: str
    format: str
    weights: Path
    network: Any = field(repr=False)
    how: str = ""


def baseline(model: nn.Module, weights: Path) -> Candidate:
    """The trained model itself, float32 in PyTorch eager mode: what every candidate is compared to."""
    return Candidate("fp32", "torch", weights, model.eval(), "the trained model, PyTorch eager")


def export_onnx(model: nn.Module, n_features: int, path: Path) -> Path:
    """`model` exported to ONNX at `path` (torch's dynamo exporter, opset 18): input `features`
    (batch, n_features) float32, output `scores`; any batch size."""
    example = torch.zeros(2, n_features)
    # The exporter warns about optional torchvision operators and pytree internals: not the user's concern.
    with quiet(), torch.no_grad():
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, verbose=False, opset_version=ONNX_OPSET,
                          external_data=False,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


def onnx_fp32(model: nn.Module, n_features: int, work: Path, name: str = "onnx-fp32", how: str = "") -> Candidate:
    """`model` on ONNX Runtime, float32."""
    path = export_onnx(model, n_features, work / f"{name}.onnx")
    return Candidate(name, "onnx", path, OnnxModule(path), how or "exported to ONNX, run by ONNX Runtime")


def onnx_int8_dynamic(fp32: Candidate, work: Path, name: str = "onnx-int8-dynamic") -> Candidate:
    """`fp32` (an ONNX candidate) with int8 weights; activations quantized per call (ONNX Runtime's
    dynamic quantization: MatMulInteger / ConvInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = work / f"{name}.onnx"
    with quiet():
        quantize_dynamic(fp32.weights, path, weight_type=QuantType.QInt8)
    return Candidate(name, "onnx", path, OnnxModule(path), "ONNX Runtime dynamic int8 (weights int8, "
                     "activations per call)")


def onnx_int8_static(fp32: Candidate, work: Path, calibration: np.ndarray, name: str = "onnx-int8-static") -> Candidate:
    """`fp32` (an ONNX candidate) quantized to int8 weights and activations in QDQ form, the
    activations' ranges calibrated on `calibration` (N, F) training samples (min-max)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared, path = work / f"{name}-prepared.onnx", work / f"{name}.onnx"
    with quiet():
        quant_pre_process(str(fp32.weights), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, path, _Calibration(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Candidate(name, "onnx", path, OnnxModule(path),
                     f"ONNX Runtime static int8, QDQ, calibrated on {len(calibration)} training samples")


def torchao_int8(model: nn.Module, work: Path) -> Candidate:
    """`model` with torchao's int8 linear layers (see `elastrain.models.torchao_int8`)."""
    from elastrain.models.torchao_int8 import quantize_int8

    with quiet():
        quantized = quantize_int8(copy.deepcopy(model).eval())
    path = work / "torchao-int8.pt"
    torch.save(quantized.state_dict(), path)
    return Candidate("torchao-int8", "torchao-int8", path, quantized,
                     "torchao int8 weights and per-call int8 activations (linear layers), PyTorch eager")


def prune_structured(model: nn.Module, n_features: int, ratio: float,
                     fine_tune: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of `model` with `ratio` of the channels of each convolution and of the units of each
    hidden layer removed (torch-pruning, smallest L2 norm first; the output layer is kept whole),
    then `fine_tune`d (it trains the pruned copy in place)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    layers = [m for m in pruned.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with quiet():
        pruner = tp.pruner.MetaPruner(pruned, torch.zeros(1, n_features), tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[layers[-1]])
        pruner.step()
    fine_tune(pruned)
    return pruned.eval()


def fine_tuner(x: np.ndarray, y: np.ndarray, loss: str, lr: float, batch_size: int, epochs: int,
               seed: int = 0) -> Callable[[nn.Module], None]:
    """Trains a module in place for `epochs` epochs over (x, y) with Adam at `lr`, the loss the
    model was trained with, shuffled batches of `batch_size` (seeded)."""

    def train(model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(seed)
        features, targets = torch.from_numpy(x), torch.from_numpy(y)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            for rows in torch.randperm(len(features), generator=generator).split(batch_size):
                optimizer.zero_grad()
                (loss_sum(loss, model(features[rows]), targets[rows]) / len(rows)).backward()
                optimizer.step()
        model.eval()

    return train


class _Calibration:
    """Batches of calibration samples, as ONNX Runtime's `CalibrationDataReader` hands them out."""

    def __init__(self, samples: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{INPUT: samples[i:i + batch]} for i in range(0, len(samples), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)

    def __iter__(self) -> Iterator[dict]:
        return self._batches


