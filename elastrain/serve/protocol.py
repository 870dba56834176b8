"""The Open Inference Protocol (KServe V2) messages `elastrain serve` speaks, with its binary tensor
data extension, and the check of an inference request against the model's input (pure functions).

Sources: KServe's Open Inference Protocol, REST: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
and its binary tensor data extension (tensors as raw little-endian bytes after the JSON, whose length
the Inference-Header-Content-Length header gives): .../data_plane/binary_tensor_data_extension
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from elastrain.models.onnx_runtime import INPUT, OUTPUT

PREDICTIONS = "predictions"   # the second output: the decoded prediction per row
ACCEPTED = {"FP32": np.float32, "FP64": np.float64}   # what the features input may be sent as
HEADER_LENGTH = "Inference-Header-Content-Length"   # the binary extension: the JSON's length in the body
EXTENSIONS = ["binary_tensor_data"]
BINARY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}   # little-endian, as the extension sends them
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_MESSAGE = 300   # characters of a message that may quote the request: a 422 never echoes a large input


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
    """One input tensor of an inference request: `data` flat or nested, row-major, or (binary
    extension) no `data` and `parameters.binary_data_size` bytes after the JSON."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None
    _raw: bytes | None = PrivateAttr(None)   # its binary data, cut from the body by parse_request


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
    """One output tensor of a response: `data` flat, row-major, or (binary extension) no `data` and
    `parameters.binary_data_size` bytes after the JSON."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferenceResponse(BaseModel):
    """The answer to an inference request (`id` only when the request had one)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class ErrorBody(BaseModel):
    """Every 4xx of `elastrain serve`: the protocol's `error`, and the same line as `detail`."""

    error: str
    detail: str


@dataclass(frozen=True)
class Wanted:
    """An output the request asks for, and whether it goes back as binary data."""

    name: str
    binary: bool


class ProtocolError(ValueError):
    """A request the model cannot take; its message says what to send instead (a 400)."""

    status = 400


class MalformedRequest(ProtocolError):
    """A body that is not an inference request at all (a 422)."""

    status = 422


class OutOfRange(ProtocolError):
    """A value the model cannot take: not finite, or past float32's range (a 422)."""

    status = 422


def parse_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    """The inference request in `body`: JSON, parsed and checked in one pass of pydantic's JSON
    parser (several times faster than `json.loads` and validating the dicts it builds); with
    `header_length` (the Inference-Header-Content-Length header) the JSON is that many bytes and
    the binary data of the inputs that declare `binary_data_size` follows it, in input order.

    Raises:
        MalformedRequest: the body is not JSON or not an inference request; the message says where.
        ProtocolError: the binary data does not match the sizes the inputs declare.
    """
    size = _header_length(header_length, len(body))
    try:
        request = InferenceRequest.model_validate_json(body[:size])
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MalformedRequest(short(f"{where}: {first['msg']}")) from None
    _attach_binary(request, body[size:])
    return request


def _header_length(header: str | None, body_size: int) -> int:
    if header is None:
        return body_size
    if not header.strip().isdigit() or int(header) > body_size:
        raise MalformedRequest(f"{HEADER_LENGTH} is {short(header, 40)!r}; it must be the length in bytes of "
                               f"the JSON at the start of the body (at most {body_size})")
    return int(header)


def _attach_binary(request: InferenceRequest, binary: bytes) -> None:
    """Hand each input that declares `binary_data_size` its bytes of `binary`, in input order."""
    offset = 0
    for item in request.inputs:
        declared = (item.parameters or {}).get("binary_data_size")
        if declared is None:
            if item.data is None:
                raise ProtocolError(f"input '{short(item.name, 60)}' has neither data nor "
                                    "parameters.binary_data_size")
            continue
        if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
            raise ProtocolError(f"input '{short(item.name, 60)}': binary_data_size must be a byte count")
        if offset + declared > len(binary):
            raise ProtocolError(f"input '{short(item.name, 60)}' declares {declared} bytes of binary data; the "
                                f"body holds {len(binary) - offset} after the JSON (send the "
                                f"{HEADER_LENGTH} header with the JSON's length)")
        item._raw = binary[offset:offset + declared]
        offset += declared
    if offset != len(binary):
        raise ProtocolError(f"the body holds {len(binary) - offset} bytes after the JSON and its inputs' "
                            "binary data")


def short(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, cut to `limit` characters (what an error may quote of a request)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
    values = _values(item)
    if values.size != math.prod(item.shape):
        raise ProtocolError(f"input '{INPUT}' has {values.size} values; shape {item.shape} needs "
                            f"{math.prod(item.shape)}")
    values = values.reshape(item.shape)
    # Checked before the cast: a value finite in float64 but past float32's range would become inf.
    bad = np.argwhere(~(np.abs(values) <= FLOAT32_MAX))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise OutOfRange(f"input '{INPUT}' row {row} column {column} is {values[row, column]:g}: values must "
                            f"be finite and within float32's range (±{FLOAT32_MAX:.4g})")
    return values.astype(np.float32, copy=False)


def _values(item: RequestInput) -> np.ndarray:
    """The input's values, from its JSON `data` or its binary data."""
    if item._raw is not None:
        dtype = np.dtype(BINARY_TYPES[item.datatype])
        if len(item._raw) % dtype.itemsize:
            raise ProtocolError(f"input '{INPUT}' has {len(item._raw)} bytes of binary data, not a whole number "
                                f"of {item.datatype} values ({dtype.itemsize} bytes each)")
        return np.frombuffer(item._raw, dtype=dtype).astype(ACCEPTED[item.datatype])
    try:
        return np.asarray(item.data, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"input '{INPUT}' holds values that are not numbers") from None


def wanted_outputs(request: InferenceRequest) -> list[Wanted]:
    """The outputs the request asks for (both when it names none), each as binary data when its
    `parameters.binary_data` says so, else when the request's `parameters.binary_data_output` does.

    Raises:
        ProtocolError: it names an output the model does not have.
    """
    default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [Wanted(OUTPUT, default), Wanted(PREDICTIONS, default)]
    names = [output.name for output in request.outputs]
    unknown = sorted(set(names) - {OUTPUT, PREDICTIONS})
    if unknown:
        raise ProtocolError(short(f"the model has outputs '{OUTPUT}' and '{PREDICTIONS}', not {unknown}"))
    return [Wanted(output.name, bool((output.parameters or {}).get("binary_data", default)))
            for output in request.outputs]


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


def response_body(model_name: str, model_version: str | None, request_id: str | None,
                  outputs: dict[str, np.ndarray | list], wanted: list[Wanted]) -> tuple[bytes, int | None]:
    """An `InferenceResponse` as bytes, built without validating what this module built (it is
    the hot path of every request): JSON, then the binary data of the outputs asked for as binary,
    in order; and the JSON's length when binary data follows it (else None). `id` only when the
    request had one.
    """
    tensors, binary = [], []
    for want in wanted:
        described = tensor(want.name, outputs[want.name])
        if want.binary:
            raw = binary_data(described.pop("data"), described["datatype"])
            described["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        tensors.append(described)
    head = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head, allow_nan=False).encode()
    return (text + b"".join(binary), len(text)) if binary else (text, None)


def binary_data(data: list, datatype: str) -> bytes:
    """A tensor's flat `data` as the binary extension sends it: little-endian numbers; BYTES as a
    4-byte little-endian length then the UTF-8 bytes of each element."""
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in data]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    return np.asarray(data, dtype=BINARY_TYPES[datatype]).tobytes()


def datatype_of(values: list) -> str:
    """The protocol's datatype for these predictions (or class labels): INT64, FP32 or BYTES."""
    if all(isinstance(v, bool | int | np.integer) for v in values):
        return "INT64"
    if all(isinstance(v, float | int | np.number) for v in values):
        return "FP32"
    return "BYTES"
