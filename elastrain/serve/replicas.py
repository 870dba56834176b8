"""`elastrain serve --replicas N`: the same server app as N Ray Serve replicas behind Ray Serve's
HTTP proxy, on the Ray cluster this process joins."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from fastapi import FastAPI

from elastrain.extras import extra_error
from elastrain.serve.app import ServeConfig, create_serve_app

APP_NAME = "elastrain-serve"


def ray_serve() -> ModuleType:
    """Ray Serve's module.

    Raises:
        UserError: Ray Serve's dependencies (the extra `serve`) are not installed.
    """
    try:
        from ray import serve
    except ModuleNotFoundError as exc:   # Ray without its extra `serve` (aiohttp, starlette, ...)
        raise extra_error(f"Ray Serve's dependency {exc.name}", ("serve",), "elastrain serve --replicas") from None
    return serve


def deploy_replicas(config: ServeConfig, replicas: int, host: str, port: int) -> None:
    """Deploy `replicas` copies of the server app (each loads the model and batches its own
    requests) with Ray Serve listening on host:port; returns once they answer. Ray must be
    connected."""
    serve = ray_serve()
    serve.start(http_options={"host": host, "port": port})
    def build() -> FastAPI:   # a builder, not an app: each replica builds its own and loads the model itself
        return create_serve_app(config)

    ingress = serve.ingress(build)
    deployment = serve.deployment(ingress(), name="model", num_replicas=replicas, max_ongoing_requests=256)
    serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False)


def serve_replicas(config: ServeConfig, replicas: int, host: str, port: int, connect: Callable[[], bool]) -> None:
    """Serve with Ray Serve until interrupted, then remove the deployment.

    Args:
        connect: joins Ray (the caller's, so that serving stays below the elastic layer) and says
            whether it started a Ray instance, which is shut down on leaving.

    Raises:
        UserError: Ray cannot be reached.
    """
    import time

    serve = ray_serve()
    started = connect()
    try:
        deploy_replicas(config, replicas, host, port)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        if started:
            import ray

            ray.shutdown()
