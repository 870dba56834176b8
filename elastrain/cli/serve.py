"""`elastrain serve`: a model over HTTP (Open Inference Protocol V2 and POST /predict)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False)


def serve(
    model: Annotated[str, typer.Argument(
        help="The model: NAME (its latest registered version), NAME:VERSION, NAME@ALIAS (reloaded when the alias "
             "moves), a job's name or id, or a model directory.", show_default=False)],
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on (default: this machine "
                                      "only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", metavar="ROWS",
        help="Rows one call of the model takes at most (dynamic batching; 1-4096).")] = 64,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", metavar="MS",
        help="How long a batch waits for more requests after its first (0-1000).")] = 5.0,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", help="Server processes, each with the model loaded.")] = 1,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", metavar="N", show_default=False,
        help="Run N replicas with Ray Serve on the Ray cluster at RAY_ADDRESS (else an embedded one): its "
             "proxy spreads requests over them; each batches its own.")] = None,
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth", help="Require an API token (Authorization: Bearer TOKEN) of the jobs' database, as "
        "`elastrain admin create-user` prints; health and /metrics stay open.")] = True,
    reload_seconds: Annotated[float, typer.Option(
        "--reload-s", metavar="S", help="How often the registry is asked whether the alias moved.")] = 2.0,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Serve plain HTTP on an address other machines reach (e.g. behind a TLS proxy).")] = False,
    max_body_mb: Annotated[float, typer.Option(
        "--max-body-mb", metavar="MB",
        help="A larger request body gets 413 before it is read on (0.001-1024).")] = 16.0,
) -> None:
    """Serve a model over HTTP: the Open Inference Protocol V2 (/v2/health/live, /v2/health/ready,
    /v2/models/NAME, /v2/models/NAME/infer with the preprocessed `features` input) and POST
    /predict with raw rows (the model's own preprocessing applied), with dynamic batching,
    Prometheus metrics at /metrics, and token auth. An alias or a bare NAME is followed: when it
    moves to another version, the server loads that one.
    """
    import uvicorn

    from elastrain.extras import require
    from elastrain.security.transport import check_listen
    from elastrain.serve.app import CONFIG_ENV, ServeConfig, config_env, create_serve_app
    from elastrain.serve.model import load, locate

    require("prometheus_client", where="elastrain serve")   # /metrics; onnxruntime only for ONNX models
    check_listen(host, tls=False, insecure=insecure)
    _check_range("--max-batch", max_batch, 1, 4096)
    _check_range("--max-wait-ms", max_wait_ms, 0, 1000)
    _check_range("--workers", workers, 1, 64)
    _check_range("--reload-s", reload_seconds, 0.1, 3600)
    _check_range("--max-body-mb", max_body_mb, 0.001, 1024)
    if replicas is not None:
        _check_range("--replicas", replicas, 1, 1024)
    found = locate(model)   # a reference that names nothing fails here, before anything listens
    load(found)   # and so does a damaged model folder (one line, not uvicorn's start-up traceback)
    config = ServeConfig(model=model, max_batch=max_batch, max_wait_ms=max_wait_ms, auth=auth,
                         reload_s=reload_seconds, max_body_bytes=int(max_body_mb * 1_000_000))
    err.print(f"serving {escape(found.name)} version {found.version} ({escape(found.path)}) on "
              f"http://{host}:{port}/v2/models/{escape(found.name)}/infer and /predict"
              f"{'' if auth else ', no token needed'}", soft_wrap=True)
    if replicas is not None:
        from elastrain.elastic.connect import connect_ray
        from elastrain.serve.replicas import serve_replicas

        serve_replicas(config, replicas, host, port, lambda: connect_ray(os.environ.get("RAY_ADDRESS")))
        return
    if workers == 1:
        uvicorn.run(create_serve_app(config), host=host, port=port, log_level="warning")
        return
    os.environ[CONFIG_ENV] = config_env(config)
    uvicorn.run("elastrain.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


def _check_range(option: str, value: float, low: float, high: float) -> None:
    from elastrain.errors import UserError

    if not low <= value <= high:
        raise UserError(f"{value:g} is out of range", where=option, fix=f"give a value from {low:g} to {high:g}")
