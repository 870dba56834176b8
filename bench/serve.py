"""Serving under load: 64 concurrent clients, each sending one V2 infer request of one row at a
time over its own keep-alive connection to 127.0.0.1, against (a) `elastrain serve` with dynamic
batching, (b) the same model behind a one-request-at-a-time FastAPI handler and (c) Ray Serve with
`@serve.batch` at the same max batch and wait (bench/serve_peers.py). Each side: a warm-up, then
requests for --seconds (at most --requests); requests/s and latency p50 / p99. The three servers
run interleaved, --repetitions times (a fresh process each time); the figures are medians.

The model (--workload), trained first and served as saved (float32, PyTorch):
- `wide` (default): an MLP 64-2048-2048-10 on scikit-learn's digits (one epoch): at batch 1 a
  call reads its 17 MB of weights for one row, so batching pays, as it does for the large dense
  models dynamic batching exists for;
- `digits`: examples/mlp_digits.yaml (64-128-10): a call costs microseconds, HTTP dominates;
- `mnist`: the CNN of examples/cnn_mnist.yaml on the MNIST test set in datasets/.
The client is a minimal asyncio HTTP/1.1 client (no HTTP library), so that it takes little of the
2 cores the servers share with it.

Targets (issue 16): >= 3x (b)'s throughput at equal or lower p99, and ahead of (c).

Usage: python -m bench.serve [--workload wide|digits|mnist] [--seconds 15] [--clients 64] [--max-batch 64]
                             [--max-wait-ms 5] [--repetitions 3] [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MNIST = Path(__file__).resolve().parents[1] / "datasets" / "mnist-t10k"
REPO = Path(__file__).resolve().parents[1]


def request_bytes(port: int, name: str, features: np.ndarray) -> bytes:
    """One HTTP/1.1 keep-alive POST of a V2 infer request for one row."""
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, features.size], "datatype": "FP32",
                                   "data": features.ravel().tolist()}]}).encode()
    head = (f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def _client(port: int, payloads: list[bytes], stop_at: float, budget: list[int],
                  latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(payloads[i % len(payloads)])
            i += 1
            status = await reader.readline()
            length, chunked = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                lower = line.lower()
                if lower.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                chunked = chunked or (lower.startswith(b"transfer-encoding:") and b"chunked" in lower)
            if chunked:   # Ray Serve's proxy streams its answers
                while (size := int((await reader.readline()).strip(), 16)) > 0:
                    await reader.readexactly(size + 2)
                await reader.readline()
            else:
                await reader.readexactly(length)
            if b" 200 " not in status:
                errors.append(status.decode().strip())
                continue
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def load(port: int, payloads: list[bytes], clients: int, seconds: float, requests: int) -> dict:
    """Run `clients` clients for `seconds` (or `requests` in all): requests/s, p50 and p99 in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    budget = [requests]
    started = time.monotonic()
    await asyncio.gather(*(_client(port, payloads[c::clients] or payloads, started + seconds, budget, latencies, errors)
                           for c in range(clients)))
    wall = time.monotonic() - started
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99]) if latencies else (float("nan"),) * 2
    return {"rps": round(len(latencies) / wall, 1), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None}


def wait_ready(port: int, path: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once GET `path` answers 200 (or POST answers at all, for Ray Serve's catch-all route)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server on port {port} did not answer in {timeout:g} s")


def measure(command: list[str], port: int, ready_path: str, payloads: list[bytes], options, env: dict) -> dict:
    """Start one server, warm it up, load it, stop it."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, ready_path, process)
        asyncio.run(load(port, payloads, options.clients, 2.0, 10**9))   # warm-up
        return asyncio.run(load(port, payloads, options.clients, options.seconds, options.requests))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds of load per server")
    parser.add_argument("--requests", type=int, default=200_000, help="at most this many requests per server")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--repetitions", type=int, default=3, help="interleaved runs of each server (medians)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--workload", choices=["wide", "digits", "mnist"], default="wide",
                        help="the model served (see above)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    options = parser.parse_args()
    from elastrain.data import prepare_dataset
    from elastrain.elastic.collective import free_port
    from elastrain.sdk import Job
    from elastrain.spec import validate_spec

    spec = EXAMPLES / ("cnn_mnist.yaml" if options.workload == "mnist" else "mlp_digits.yaml")
    if options.workload == "mnist" and not MNIST.is_dir():
        raise SystemExit(f"the MNIST test set is not at {MNIST}: --workload mnist needs it")
    overrides = {"name": "wide-mlp", "model.hidden": [2048, 2048], "train.epochs": 1} if options.workload == "wide" \
        else {}
    with tempfile.TemporaryDirectory() as home:
        print(f"training {options.workload} ({spec.name})", file=sys.stderr)
        model_dir = Job.from_yaml(spec, overrides).run(home=home).model_path
        job = json.loads((Path(model_dir) / "model.json").read_text())["job"]
        name, rows = job["name"], prepare_dataset(validate_spec(job)).x_val
        env = {**os.environ, "ELASTRAIN_HOME": home}
        batch, wait = str(options.max_batch), str(options.max_wait_ms)
        sides = {
            "elastrain": ([sys.executable, "-m", "elastrain", "serve", model_dir, "--no-auth", "--max-batch", batch,
                           "--max-wait-ms", wait], "/v2/health/ready"),
            "unbatched": ([sys.executable, "-m", "bench.serve_peers", "unbatched", model_dir], "/docs"),
            "ray_serve": ([sys.executable, "-m", "bench.serve_peers", "ray_serve", model_dir], "/-/healthz"),
        }
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for repetition in range(options.repetitions):   # interleaved: a, b, c, a, b, c, ...
            for side, (command, ready) in sides.items():
                port = free_port()
                full = [*command, "--port", str(port)] if side == "elastrain" else [*command, str(port), batch, wait]
                payloads = [request_bytes(port, name, row) for row in rows[:256]]
                print(f"repetition {repetition + 1}: loading {side} on port {port}", file=sys.stderr)
                runs[side].append(measure(full, port, ready, payloads, options, env))
                print(side, runs[side][-1], file=sys.stderr)
    figures = {side: {key: common.median([run[key] for run in side_runs]) for key in ("rps", "p50_ms", "p99_ms")}
               for side, side_runs in runs.items()}
    ours, plain, ray_side = figures["elastrain"], figures["unbatched"], figures["ray_serve"]
    common.report("serve", {
        "workload": options.workload, "clients": options.clients, "max_batch": options.max_batch,
        "max_wait_ms": options.max_wait_ms, "seconds": options.seconds, "repetitions": options.repetitions,
        "rps": ours["rps"], "p50_ms": ours["p50_ms"], "p99_ms": ours["p99_ms"],
        "unbatched_rps": plain["rps"], "unbatched_p50_ms": plain["p50_ms"], "unbatched_p99_ms": plain["p99_ms"],
        "ray_serve_rps": ray_side["rps"], "ray_serve_p50_ms": ray_side["p50_ms"],
        "ray_serve_p99_ms": ray_side["p99_ms"],
        "speedup_vs_unbatched": round(ours["rps"] / plain["rps"], 2) if plain["rps"] else None,
        "speedup_vs_ray_serve": round(ours["rps"] / ray_side["rps"], 2) if ray_side["rps"] else None,
        "speedup_vs_unbatched_per_repetition": [round(a["rps"] / b["rps"], 2) if b["rps"] else None
                                                for a, b in zip(runs["elastrain"], runs["unbatched"], strict=True)],
        "errors": {side: sum(run["errors"] for run in side_runs) for side, side_runs in runs.items()}}, options.save)


if __name__ == "__main__":
    main()
