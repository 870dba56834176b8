"""The Open Inference Protocol (KServe V2) messages `elastrain serve` speaks, and the check of an
inference request against the model's input (pure functions).

Source: KServe's Open Inference Protocol, REST: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from elastrain.models.onnx_runtime import INPUT, OUTPUT

PREDICTIONS = "predictions"   # the second output: the decoded prediction per row
ACCEPTED = {"FP32": np.float32, "FP64": np.float64}   # what the features input may be sent as


class TensorMeta(BaseModel):
    """A model input's or output's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}: what the model is and what it takes."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


class RequestInput(BaseModel):
    """One input tensor of an inference request: `data` flat or nested, row-major."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    """An output the client asks for by name."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """POST /v2/models/{name}/infer."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """One output tensor of a response: `data` flat, row-major."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    """The answer to an inference request."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class ProtocolError(ValueError):
    """A request the model cannot take; its message says what to send instead (a 400)."""


def parse_request(body: bytes) -> InferenceRequest:
    """The inference request in the JSON `body`, parsed and checked in one pass of pydantic's
    JSON parser (several times faster than `json.loads` and validating the dicts it builds).

    Raises:
        ProtocolError: the body is not JSON or not an inference request; the message says where.
    """
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ProtocolError(f"{where}: {first['msg']}") from None


def features_of(request: InferenceRequest, n_features: int) -> np.ndarray:
    """The request's `features` input as float32 (N, n_features).

    Raises:
        ProtocolError: no input named `features`, a datatype other than FP32 / FP64, a shape
            other than [N, n_features], or data that does not fill that shape with numbers.
    """
    named = {item.name: item for item in request.inputs}
    if INPUT not in named:
        raise ProtocolError(f"the model takes one input named '{INPUT}', got {sorted(named)}")
    item = named[INPUT]
    if item.datatype not in ACCEPTED:
        raise ProtocolError(f"input '{INPUT}' has datatype {item.datatype}; send FP32")
    if len(item.shape) != 2 or item.shape[1] != n_features or item.shape[0] < 1:
        raise ProtocolError(f"input '{INPUT}' has shape {item.shape}; the model takes [N, {n_features}]")
    try:
        values = np.asarray(item.data, dtype=ACCEPTED[item.datatype])
    except (TypeError, ValueError):
        raise ProtocolError(f"input '{INPUT}' holds values that are not numbers") from None
    if values.size != math.prod(item.shape):
        raise ProtocolError(f"input '{INPUT}' has {values.size} values; shape {item.shape} needs "
                            f"{math.prod(item.shape)}")
    if not np.isfinite(values).all():
        raise ProtocolError(f"input '{INPUT}' holds NaN or infinite values")
    return values.reshape(item.shape).astype(np.float32, copy=False)


def wanted_outputs(request: InferenceRequest) -> list[str]:
    """The outputs the request asks for (both when it names none).

    Raises:
        ProtocolError: it names an output the model does not have.
    """
    if not request.outputs:
        return [OUTPUT, PREDICTIONS]
    names = [output.name for output in request.outputs]
    unknown = sorted(set(names) - {OUTPUT, PREDICTIONS})
    if unknown:
        raise ProtocolError(f"the model has outputs '{OUTPUT}' and '{PREDICTIONS}', not {unknown}")
    return names


def tensor(name: str, values: np.ndarray | list) -> dict[str, Any]:
    """An output tensor as `ResponseOutput` holds it: scores as FP32 (N, K); predictions as INT64,
    FP32 or BYTES (labels)."""
    if isinstance(values, np.ndarray):
        return {"name": name, "shape": list(values.shape), "datatype": "FP32",
                "data": values.astype(np.float32).ravel().tolist()}
    datatype = datatype_of(values)
    data = [v.item() if isinstance(v, np.generic) else v for v in values]
    return {"name": name, "shape": [len(values)], "datatype": datatype,
            "data": [str(v) for v in data] if datatype == "BYTES" else data}


def response_json(model_name: str, model_version: str | None, request_id: str | None,
                  outputs: dict[str, np.ndarray | list], wanted: list[str]) -> bytes:
    """An `InferenceResponse` as JSON bytes, built without validating what this module built (it is
    the hot path of every request)."""
    return json.dumps({"model_name": model_name, "model_version": model_version, "id": request_id,
                       "outputs": [tensor(name, outputs[name]) for name in wanted]}).encode()


def datatype_of(values: list) -> str:
    """The protocol's datatype for these predictions (or class labels): INT64, FP32 or BYTES."""
    if all(isinstance(v, bool | int | np.integer) for v in values):
        return "INT64"
    if all(isinstance(v, float | int | np.number) for v in values):
        return "FP32"
    return "BYTES"
