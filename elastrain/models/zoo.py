"""The model zoo: each kind of the spec built as a `torch.nn.Module` that maps a batch of
flat feature vectors (N, n_features) to (N, n_outputs) scores."""

from __future__ import annotations

import importlib
import math

from torch import nn

from elastrain.errors import UserError
from elastrain.models.dropout import SampleDropout
from elastrain.models.kernels import RandomFourierFeatures
from elastrain.models.text import TextModel
from elastrain.spec import (
    CnnModelSpec,
    LinearModelSpec,
    MlpModelSpec,
    ModelSpec,
    PythonModelSpec,
    SvmModelSpec,
    TextModelSpec,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
}


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], n_outputs: int,
                feature_variance: float = 1.0) -> nn.Module:
    """Build the model a spec asks for, with fresh parameters drawn from torch's current RNG.

    Args:
        spec: the `model` section of a job spec.
        input_shape: the shape of one sample, (n_features,) or (C, H, W).
        n_outputs: how many scores per sample the loss expects.
        feature_variance: the variance of the training features (all values together), which
            `gamma: scale` of an RBF kernel divides by (a loaded model's kernel is in its weights).

    Returns:
        A module taking float32 (N, prod(input_shape)) and returning (N, n_outputs).

    Raises:
        UserError: a `python:` model cannot be imported or returns the wrong shape, or the kind is a
            plugin's (its learner builds what it trains).
    """
    n_features = math.prod(input_shape)
    if isinstance(spec, SvmModelSpec) and spec.kernel == "rbf":
        # scikit-learn's SVC gamma="scale"; a constant input (variance 0) counts as variance 1.
        gamma = spec.gamma if spec.gamma != "scale" else 1.0 / (n_features * (feature_variance or 1.0))
        return nn.Sequential(RandomFourierFeatures(n_features, spec.n_components, gamma),
                             nn.Linear(spec.n_components, n_outputs))
    if isinstance(spec, LinearModelSpec | SvmModelSpec):
        return nn.Linear(n_features, n_outputs)
    if isinstance(spec, MlpModelSpec):
        return _mlp(n_features, spec.hidden, n_outputs, spec.activation, spec.dropout)
    if isinstance(spec, CnnModelSpec):
        return _cnn(input_shape, spec, n_outputs)
    if isinstance(spec, TextModelSpec):
        if not spec.text_ids:
            raise UserError("model kind text needs token ids: train it on a folder elastrain prepare wrote with "
                            "one text column", where="data.source",
                            fix="declare data.columns.NAME.type: text, run `elastrain prepare`, then set "
                                "data.source: prepared:FOLDER")
        return TextModel(spec, n_features, n_outputs)
    if isinstance(spec, PythonModelSpec):
        return _user_model(spec, input_shape, n_outputs)
    raise UserError(f"model '{spec.kind}' is trained by its plugin's learner, which builds its own model",
                    where="model.kind")


def _mlp(n_in: int, hidden: list[int], n_out: int, activation: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, width in enumerate(hidden):
        layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
        if dropout > 0:   # masks per sample: the same on any number of workers (models.dropout)
            layers.append(SampleDropout(dropout, layer=index))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _cnn(input_shape: tuple[int, ...], spec: CnnModelSpec, n_outputs: int) -> nn.Sequential:
    if len(input_shape) != 3:
        raise UserError(f"model cnn needs image data (C, H, W), but this data has shape {input_shape}",
                        where="model.kind", fix="use an idx: source or builtin:digits, or model mlp")
    channels, height, width = input_shape
    # No batch normalization: its statistics would depend on how a batch is split over workers.
    layers: list[nn.Module] = [nn.Unflatten(1, input_shape)]
    for out_channels in spec.channels:
        padding = spec.kernel_size // 2
        layers += [nn.Conv2d(channels, out_channels, spec.kernel_size, padding=padding),
                   ACTIVATIONS[spec.activation]()]
        # An even kernel with this padding grows each side by one (size + 2 * padding - kernel + 1).
        height, width = (side + 2 * padding - spec.kernel_size + 1 for side in (height, width))
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out_channels
    layers.append(nn.Flatten())
    layers.append(_mlp(channels * height * width, spec.hidden, n_outputs, spec.activation, spec.dropout))
    return nn.Sequential(*layers)


def _user_model(spec: PythonModelSpec, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    _, module_name, function_name = spec.kind.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import module '{module_name}' ({exc})", where="model.kind",
                        fix="make it importable (PYTHONPATH or an installed package)") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise UserError(f"module '{module_name}' has no function '{function_name}'", where="model.kind")
    try:
        model = factory(input_shape=input_shape, n_outputs=n_outputs, **spec.options)
    except TypeError as exc:
        raise UserError(f"{spec.kind} could not be called ({exc})", where="model.kind",
                        fix="accept input_shape=, n_outputs= and the keys of model.options") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec.kind} returned {type(model).__name__}, not a torch.nn.Module",
                        where="model.kind")
    return model
