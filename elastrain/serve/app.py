"""The inference server: the Open Inference Protocol (V2, with its binary tensor data extension)
and POST /predict over one model, with dynamic batching, token auth, a body size limit, Prometheus
metrics of every answer, and a reload when the alias it serves moves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elastrain.errors import UserError
from elastrain.models.onnx_runtime import INPUT, OUTPUT
from elastrain.serve import protocol
from elastrain.serve.batcher import DynamicBatcher
from elastrain.serve.model import ServedModel, check_features, check_scores, load, locate

log = logging.getLogger("elastrain.serve")
CONFIG_ENV = "ELASTRAIN_SERVE_CONFIG"   # how `elastrain serve --workers N` hands its settings to each worker
SCHEMA_REF = "#/components/schemas/{model}"
INFER_BODY = {"requestBody": {
    "required": True,
    "description": f"JSON; or (the binary tensor data extension) JSON of {protocol.HEADER_LENGTH} bytes, then "
                   "the binary data of the inputs that declare parameters.binary_data_size",
    "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="InferenceRequest")}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
INFER_BINARY = {200: {
    "description": f"JSON; or, with outputs asked for as binary data, JSON of {protocol.HEADER_LENGTH} bytes "
                   "(the header says how many), then their data",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
TOKEN_CACHE_S = 30.0                    # a checked token is trusted this long before the database is asked again
MAX_BODY_BYTES = 16_000_000             # a request body larger than this gets 413 (`elastrain serve --max-body-mb`)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these 4xx, each with the `ErrorBody` every 4xx of the server has."""
    said = {400: "The body cannot be read, or does not fit the model (the line says what to send)",
            401: "No API token, or not a valid one", 404: "No such model or version",
            413: "The request body is over the server's limit",
            422: "The body is not an inference request, or a value is out of range"}
    return {code: {"model": protocol.ErrorBody, "description": said[code]} for code in codes}


@dataclass(frozen=True)
class ServeConfig:
    """What `elastrain serve` was asked for.

    Attributes:
        model: the model reference (NAME, NAME:VERSION, NAME@ALIAS, a run, or a directory).
        max_batch: rows a batch holds at most; max_wait_ms: how long a batch waits to fill.
        auth: whether requests need an API token of the jobs' database (`elastrain admin create-user`).
        reload_s: how often the registry is asked whether the alias or latest version moved.
        db_url: the jobs' database (default ELASTRAIN_DB_URL or the SQLite file under ELASTRAIN_HOME).
        max_body_bytes: a larger request body is refused (413) before it is parsed.
    """

    model: str
    max_batch: int = 64
    max_wait_ms: float = 5.0
    auth: bool = True
    reload_s: float = 2.0
    db_url: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES


class Rows(BaseModel):
    """POST /predict: raw samples as the training data held them (records keyed by column, or
    rows of values in column order); the model's own preprocessing is applied."""

    rows: list[Any] = Field(min_length=1, max_length=10_000)


class Predictions(BaseModel):
    """The answer of POST /predict: one prediction per row (a value, or a class label)."""

    model_name: str
    model_version: str
    predictions: list[Any]


class _Metrics:
    """Prometheus metrics of one server process: every answer by endpoint and status code (the
    refused ones too), its time, and the rows per call of the model."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("elastrain_serve_requests", "Requests answered", ["endpoint", "code"],
                                registry=self.registry)
        self.latency = Histogram("elastrain_serve_request_seconds", "Time to answer a request",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5))
        self.batch = Histogram("elastrain_serve_batch_rows", "Rows per call of the model", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

    def observe(self, endpoint: str, code: int, started: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - started)


def _endpoint(path: str) -> str:
    """The `endpoint` label of a request path: infer, predict, metadata, health or other."""
    if path.startswith("/v2/models/"):
        return "infer" if path.endswith("/infer") else "metadata"
    if path == "/predict":
        return "predict"
    return "health" if path.startswith("/v2/health/") else "other"


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # The protocol's error body is {"error": message}; the API's is {"detail": message}: both are given.
    message = protocol.short(message)
    return JSONResponse({"error": message, "detail": message}, status_code=status, headers=headers)


class _Door:
    """Every HTTP request passes here first: a body over `limit` bytes gets 413 before anything
    parses it (the body is read here and handed on), and every answer, refused or not, is counted
    in the metrics with its status and time (except /metrics' own)."""

    def __init__(self, app: ASGIApp, limit: int, metrics: _Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            body = await self._body(scope, receive)
            if body is None:
                await _error_response(413, f"the request body is over {self.limit} bytes (the server's "
                                           "--max-body-mb); send fewer rows per request")(scope, receive, counted)
                return
            await self.app(scope, _replay(body, receive), counted)
        finally:
            self.metrics.observe(_endpoint(scope["path"]), status[0], started)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request's body, or None when it is over the limit (declared or sent)."""
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":   # the client went away: hand on an empty body
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` whole, then whatever the connection says next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class _Tokens:
    """Checks bearer tokens against the jobs' database, remembering good ones for TOKEN_CACHE_S."""

    def __init__(self, db_url: str | None) -> None:
        from elastrain.store import Store, connect

        self.store = Store(connect(db_url))
        self.trusted: dict[str, float] = {}

    async def check(self, authorization: str | None) -> None:
        """Pass a known token; a new one is looked up in the database (in a worker thread, so that
        the requests in flight do not wait for it), then trusted for TOKEN_CACHE_S.

        Raises:
            HTTPException: 401, no token or not a valid one.
        """
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token:
            raise HTTPException(401, "send an API token: Authorization: Bearer TOKEN (`elastrain admin create-user`)")
        if self.trusted.get(token, 0.0) > time.monotonic():
            return
        if await asyncio.to_thread(self.store.authenticate, token) is None:
            raise HTTPException(401, "the token is not valid")
        self.trusted[token] = time.monotonic() + TOKEN_CACHE_S


def create_serve_app(config: ServeConfig) -> FastAPI:
    """The server's ASGI app; it loads the model at start-up.

    Raises:
        UserError: (at start-up) the model reference names nothing.
    """
    state: dict[str, Any] = {}
    metrics = _Metrics()
    tokens = _Tokens(config.db_url) if config.auth else None

    def current() -> ServedModel:
        return state["model"]

    def score(features: np.ndarray) -> np.ndarray:
        return current().saved.scores(features)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["model"] = await asyncio.to_thread(lambda: load(locate(config.model, config.db_url)))
        gc.freeze()   # what start-up made (torch, the model) is never garbage: full collections skip it
        batcher = state["batcher"] = DynamicBatcher(score, config.max_batch, config.max_wait_ms,
                                                    metrics.batch.observe)
        batcher.start()
        follower = asyncio.create_task(_follow(state, config))
        try:
            yield
        finally:
            follower.cancel()
            await batcher.stop()

    # A coroutine, not a function: FastAPI would run a plain one in a worker thread on every request.
    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if tokens is not None:
            await tokens.check(authorization)

    # No docs UI: Swagger UI would load from a CDN, which offline machines cannot reach.
    app = FastAPI(title="elastrain serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(_Door, limit=config.max_body_bytes, metrics=metrics)
    Auth = Depends(authorized)

    def served(name: str, version: str | None) -> ServedModel:
        model = current()
        if name != model.name or (version is not None and version != model.version):
            shown = f"{name}" + (f" version {version}" if version is not None else "")
            raise HTTPException(404, f"this server serves {model.name} version {model.version}, not {shown}")
        return model

    # Starlette's class: its own 404 and 405 (no such route, wrong method) get the protocol's body too.
    @app.exception_handler(StarletteHTTPException)
    async def v2_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """One line for the first problem, never the whole input echoed back."""
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return _error_response(422, f"{where}: {first['msg']}")

    @app.get("/v2/health/live")
    async def live() -> dict:
        """Whether the server runs."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        """Whether it answers inference requests (its model is loaded)."""
        return {"ready": "model" in state}

    @app.get("/v2")
    def server_metadata() -> dict:
        """The server's name and protocol extensions."""
        from elastrain import __version__

        return {"name": "elastrain", "version": __version__, "extensions": protocol.EXTENSIONS}

    @app.get("/v2/models/{name}", response_model=protocol.ModelMetadata, dependencies=[Auth],
             responses=_errors(401, 404))
    @app.get("/v2/models/{name}/versions/{version}", response_model=protocol.ModelMetadata, dependencies=[Auth],
             responses=_errors(401, 404))
    def model_metadata(name: str, version: str | None = None) -> protocol.ModelMetadata:
        """The model's inputs and outputs (the version it serves now)."""
        model = served(name, version)
        return protocol.ModelMetadata(
            name=model.name, versions=[model.version], platform=model.platform,
            inputs=[protocol.TensorMeta(name=INPUT, datatype="FP32", shape=[-1, model.n_features])],
            outputs=[protocol.TensorMeta(name=OUTPUT, datatype="FP32", shape=[-1, model.n_outputs]),
                     protocol.TensorMeta(name=protocol.PREDICTIONS, shape=[-1],
                                         datatype=protocol.datatype_of(model.saved.classes or [0.0]))])

    @app.get("/v2/models/{name}/ready", dependencies=[Auth], responses=_errors(401, 404))
    @app.get("/v2/models/{name}/versions/{version}/ready", dependencies=[Auth], responses=_errors(401, 404))
    def model_ready(name: str, version: str | None = None) -> dict:
        """Whether this model (version) answers inference requests."""
        return {"name": served(name, version).name, "ready": True}

    # The hot path: the body is read and checked by pydantic's JSON parser in one pass, and the token
    # checked here, not by FastAPI's dependency solver (together a fifth of a request's time).
    @app.post("/v2/models/{name}/infer", response_model=protocol.InferenceResponse, openapi_extra=INFER_BODY,
              responses={**INFER_BINARY, **_errors(400, 401, 404, 413, 422)})
    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=protocol.InferenceResponse,
              openapi_extra=INFER_BODY, responses={**INFER_BINARY, **_errors(400, 401, 404, 413, 422)})
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        """Scores and predictions for the `features` input (N, F) FP32 or FP64, the model's
        preprocessed input, as JSON `data` or as binary data after the JSON (the binary tensor data
        extension; outputs as binary data when asked); send `Authorization: Bearer TOKEN` unless
        the server runs with --no-auth."""
        if tokens is not None:
            await tokens.check(request.headers.get("authorization"))
        model = served(name, version)
        try:
            body = protocol.parse_request(await request.body(), request.headers.get(protocol.HEADER_LENGTH))
            features = protocol.features_of(body, model.n_features)
            wanted = protocol.wanted_outputs(body)
        except protocol.ProtocolError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        scores = await state["batcher"].submit(features)
        try:
            check_scores(scores, features, [], f"input '{INPUT}'")
        except UserError as exc:
            raise HTTPException(422, exc.line()) from None
        outputs = {OUTPUT: scores, protocol.PREDICTIONS: model.saved.decode_scores(scores)}
        content, header_length = protocol.response_body(model.name, model.version, body.id, outputs, wanted)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={protocol.HEADER_LENGTH: str(header_length)})

    @app.post("/predict", response_model=Predictions, dependencies=[Auth], responses=_errors(400, 401, 413, 422))
    async def predict(body: Rows) -> Predictions:
        """Predictions for raw rows: the model's saved preprocessing is applied first. A row unlike
        the training data, or with a value past float32's range once scaled, gets 422 naming it."""
        model = current()
        names = model.saved.preprocessor.feature_names
        try:
            with np.errstate(over="ignore"):   # a value past float32's range becomes inf: checked next
                features = model.saved.preprocessor.transform_rows(body.rows, where="rows")
            check_features(features, names, "rows")
        except UserError as exc:
            raise HTTPException(422, exc.line()) from None
        scores = await state["batcher"].submit(features)
        try:
            check_scores(scores, features, names, "rows")
        except UserError as exc:
            raise HTTPException(422, exc.line()) from None
        return Predictions(model_name=model.name, model_version=model.version,
                           predictions=model.saved.decode_scores(scores))

    def openapi() -> dict[str, Any]:
        """FastAPI's document, plus the inference request's schema, which `infer` parses itself, and
        the bearer token as the security scheme of the routes that need it (without --no-auth)."""
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            request_schema = protocol.InferenceRequest.model_json_schema(ref_template=SCHEMA_REF)
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(request_schema.pop("$defs", {}),
                                                        InferenceRequest=request_schema)
            if tokens is not None:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for operation in (op for item in document["paths"].values() for op in item.values()):
                if "401" in operation["responses"]:
                    if tokens is None:
                        del operation["responses"]["401"]
                    else:
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {
        "schema": {"type": "string"}}}, "description": "Prometheus' text format"}})
    def prometheus() -> Response:
        """Requests, latency and batch sizes in Prometheus' text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _follow(state: dict[str, Any], config: ServeConfig) -> None:
    """Load the version the reference names once it changes (an alias moved, a new latest version)."""
    while state["model"].follows:
        await asyncio.sleep(config.reload_s)
        try:
            where = await asyncio.to_thread(locate, config.model, config.db_url)
            if where.version != state["model"].version:
                state["model"] = await asyncio.to_thread(load, where)
                log.info("now serving %s version %s", where.name, where.version)
        except UserError as exc:   # the alias was removed, the database is away: keep serving what is loaded
            log.warning("keeping %s version %s: %s", state["model"].name, state["model"].version, exc.line())


def app_from_env() -> FastAPI:
    """The app for the settings `elastrain serve` put in ELASTRAIN_SERVE_CONFIG (each worker process)."""
    return create_serve_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def config_env(config: ServeConfig) -> str:
    """ELASTRAIN_SERVE_CONFIG's value for `config`."""
    return json.dumps(asdict(config))
