"""torchao's int8 quantization of a model's linear layers (weights int8, activations quantized
per call): the PyTorch candidate of `elastrain optimize`, and what loading a saved int8 model
re-applies before its weights."""

from __future__ import annotations

from torch import nn

from elastrain.models.quiet import quiet


def quantize_int8(model: nn.Module) -> nn.Module:
    """`model` with its nn.Linear weights int8 (torchao's `Int8DynamicActivationInt8WeightConfig`),
    in place; convolutions stay float32."""
    # torchao logs, at import, each optional CUDA kernel library it cannot load on a CPU machine.
    with quiet():
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model
