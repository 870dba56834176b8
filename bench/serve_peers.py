"""The servers `bench.serve` compares `elastrain serve` with, each serving the same model directory
with the same request and answer (the V2 infer call with one row of preprocessed features):

- `unbatched`: a FastAPI app whose handler scores each request on its own, one at a time (the
  event loop runs one handler at once), as a model is often first put behind HTTP;
- `ray_serve`: a Ray Serve deployment whose handler collects requests with `@serve.batch` at the
  same max batch and wait as elastrain's batcher.

(No `from __future__ import annotations` here: FastAPI must see the handler's body type itself.)

Usage (what bench.serve starts): python -m bench.serve_peers {unbatched|ray_serve} MODEL_DIR PORT MAX_BATCH MAX_WAIT_MS
"""

import gc
import sys


def unbatched_app(model_dir: str):
    """The one-request-at-a-time FastAPI app."""
    from fastapi import FastAPI, HTTPException, Response

    from elastrain.models.onnx_runtime import OUTPUT
    from elastrain.serve import protocol
    from elastrain.train import load_model

    saved = load_model(model_dir)
    gc.freeze()   # as elastrain serve does after loading: the comparison is of batching alone
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, body: protocol.InferenceRequest) -> Response:
        try:
            features = protocol.features_of(body, body.inputs[0].shape[1] if body.inputs[0].shape else 0)
        except protocol.ProtocolError as exc:
            raise HTTPException(400, str(exc)) from None
        scores = saved.scores(features)
        outputs = {OUTPUT: scores, protocol.PREDICTIONS: saved.decode_scores(scores)}
        return Response(protocol.response_body(name, "1", body.id, outputs, protocol.wanted_outputs(body))[0],
                        media_type="application/json")

    return app


def run_ray_serve(model_dir: str, port: int, max_batch: int, max_wait_ms: float) -> None:
    """Serve the model with Ray Serve (an embedded Ray) until killed."""
    import time

    import numpy as np
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(max_ongoing_requests=256)
    class Infer:
        def __init__(self, directory: str) -> None:
            from elastrain.train import load_model

            self.saved = load_model(directory)
            gc.freeze()

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1000)
        async def score(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
            stacked = np.concatenate(blocks)
            scores = self.saved.scores(stacked)
            out, start = [], 0
            for block in blocks:
                out.append(scores[start:start + len(block)])
                start += len(block)
            return out

        async def __call__(self, request: Request) -> Response:
            from elastrain.models.onnx_runtime import OUTPUT
            from elastrain.serve import protocol

            body = protocol.InferenceRequest.model_validate(await request.json())
            features = protocol.features_of(body, body.inputs[0].shape[1])
            scores = await self.score(features)
            outputs = {OUTPUT: scores, protocol.PREDICTIONS: self.saved.decode_scores(scores)}
            return Response(protocol.response_body(request.url.path.split("/")[3], "1", body.id, outputs,
                                                   protocol.wanted_outputs(body))[0], media_type="application/json")

    serve.run(Infer.bind(model_dir), route_prefix="/", blocking=False)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def main() -> None:
    kind, model_dir, port, max_batch, max_wait_ms = sys.argv[1:6]
    if kind == "unbatched":
        import uvicorn

        uvicorn.run(unbatched_app(model_dir), host="127.0.0.1", port=int(port), log_level="warning")
    else:
        run_ray_serve(model_dir, int(port), int(max_batch), float(max_wait_ms))


if __name__ == "__main__":
    main()
