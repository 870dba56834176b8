"""Data bigger than memory: an elastrain job streaming Parquet shards, against the same job with
its data in memory, on a seeded HIGGS-like table (`bench.higgs_like`) of two sizes.

Each run is `elastrain run` in its own process with its own local Ray; a sampler thread records
the peak resident memory (VmHWM) of every worker process. Measured:

- memory as data grows: each worker's peak RSS on the large set against the small one, and
  against the streamed runs' declared budget (`resources.memory_per_worker`, 1536 MiB);
- read amplification: bytes the group read in one epoch / the data set's bytes, on 2 and 3 workers;
- throughput: samples/s streaming vs the same job with the small set in memory (one Parquet file),
  the median of `--repetitions` interleaved runs a side;
- time to first step: from the group's start to the first reported step (an upper bound, within
  the progress report's interval), and the statistics pass, reported apart;
- the peer: Ray Train 2.60 + Ray Data's `streaming_split` on the same shards, model, global batch
  and workers (`bench.raydata_peer`): elastrain's streamed samples/s over its.

- exactly once under chaos (`bench.streaming_chaos`): one epoch of the small set while a worker
  is killed and the group resized 2 -> 1 -> 3 -> 2, then the driver SIGKILLed and the job resumed:
  training rows repeated and missing in the epoch, from the workers' sample-id traces; the same
  kill, resizes and driver loss on the Ray Train + Ray Data peer (`bench.raydata_peer_chaos`), its
  repeated and missing rows.

    python -m bench.streaming [--small-gb 1] [--large-gb 8] [--repetitions 3] [--data /tmp/elastrain-bench-streaming]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import common
from bench.higgs_like import BYTES_PER_ROW, rows, write_shards

SHARD_ROWS = 1 << 20      # ~126 MB per shard
GROUP_ROWS = 1 << 17      # 8 row groups (pieces) per shard
BATCH = 4096
HIDDEN = [64]
# The streamed runs' declared resources.memory_per_worker (MiB): what a worker's peak must stay under.
MEMORY_BUDGET_MIB = 1536


def data_set(folder: Path, gigabytes: float) -> Path:
    """The shards of a `gigabytes` data set under `folder` (written once, then reused)."""
    target = folder / f"higgs-{gigabytes:g}g"
    done = target / "DONE"
    if not done.exists():
        total = int(gigabytes * 1e9 / BYTES_PER_ROW)
        print(f"writing {total:,} rows to {target} ...", file=sys.stderr)
        write_shards(target, total, SHARD_ROWS, GROUP_ROWS, seed=0)
        done.write_text(str(total))
    return target


def one_file(folder: Path, shards: Path) -> Path:
    """The same rows as `shards`, as one Parquet file (the in-memory side reads it whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"{shards.name}-one.parquet"
    if not path.exists():
        total = int((shards / "DONE").read_text())
        x, y = rows(0, total, seed=0)
        pq.write_table(pa.table({**{f"f{j}": x[:, j] for j in range(x.shape[1])}, "label": y}), path,
                       row_group_size=GROUP_ROWS)
    return path


def spec(source: str, workers: int, max_steps: int | None, epochs: int | None = None,
         memory_mib: float | None = MEMORY_BUDGET_MIB) -> dict:
    """The benchmark job: an MLP 28-64-2 with Adam, global batch 4096, each worker declaring `memory_mib`."""
    return {"name": "bench-streaming",
            "data": {"source": source, "target": "label"},
            "model": {"kind": "mlp", "hidden": HIDDEN},
            "train": {"optimizer": "adam", "lr": 0.001, "batch_size": BATCH, "max_steps": max_steps,
                      "epochs": epochs, "seed": 0},
            "resources": {"workers": {"min": workers, "max": workers}, "cpus_per_worker": 0.5,
                          "memory_per_worker": memory_mib, "wait_timeout_s": 120}}


def run(job: dict, home: Path) -> dict:
    """Run `job` with `elastrain run` in a fresh process and local Ray; its figures."""
    home.mkdir(parents=True, exist_ok=True)
    spec_file = home / "job.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"ELASTRAIN_HOME": str(home)}
    began = time.time()
    done, peak_mb = common.run_measured([sys.executable, "-m", "elastrain", "run", str(spec_file), "--json"], env,
                                        3600, prefix=b"ray::Worker")
    if done.returncode != 0:
        raise SystemExit(f"the job failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    folder = Path(result["run_dir"])
    status = json.loads((folder / "status.json").read_text())
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    losses = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
    start = next(e["t"] for e in events if e["kind"] == "start")
    manifest = yaml.safe_load((folder / "spec.yaml").read_text())["data"].get("manifest") or {}
    return {"samples_per_s": result["samples_per_s"], "steps": result["steps"], "wall_s": round(time.time() - began, 1),
            "peak_rss_mb": peak_mb,
            "read_bytes": status.get("read_bytes"), "time_to_first_step_s": round(losses[0]["t"] - start, 2),
            "stats_s": manifest.get("stats_s")}


def child_report(module: str, *args: str) -> dict:
    """`python -m bench.MODULE ARGS` in its own process (and local Ray): the JSON line it printed last."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"bench.{module} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-gb", type=float, default=1.0, help="the small data set's size (default 1)")
    parser.add_argument("--large-gb", type=float, default=8.0, help="the large data set's size (default 8)")
    parser.add_argument("--steps", type=int, default=300, help="steps of the memory and throughput runs")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-streaming",
                        help="where the data sets are written once and reused")
    parser.add_argument("--repetitions", type=int, default=3,
                        help="interleaved runs of each throughput side (streamed, in memory, the peer); "
                             "their medians are compared (default 3)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    small, large = data_set(args.data, args.small_gb), data_set(args.data, args.large_gb)
    whole = one_file(args.data, small)
    small_bytes = sum(p.stat().st_size for p in small.glob("part-*.parquet"))
    homes = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    glob = "part-*.parquet"
    streamed_large = run(spec(f"parquet:{large}/{glob}", 2, args.steps), homes / "large")
    # The throughput sides one after the other, repeated: the machine's drift falls on all three.
    small_runs, memory_runs, peer_runs = [], [], []
    for repetition in range(args.repetitions):
        small_runs.append(run(spec(f"parquet:{small}/{glob}", 2, args.steps), homes / f"small-{repetition}"))
        memory_runs.append(run(spec(f"parquet:{whole}", 2, args.steps, memory_mib=None),
                               homes / f"memory-{repetition}"))
        peer_runs.append(child_report("raydata_peer", "--data", str(small), "--steps", str(args.steps)))
    streamed_small, in_memory = small_runs[0], memory_runs[0]
    streamed_rate = common.median([r["samples_per_s"] for r in small_runs])
    memory_rate = common.median([r["samples_per_s"] for r in memory_runs])
    peer_rate = common.median([r["samples_per_s"] for r in peer_runs])
    epochs = {workers: run(spec(f"parquet:{small}/{glob}", workers, None, epochs=1), homes / f"epoch-{workers}")
              for workers in (2, 3)}
    amplification = {w: round(r["read_bytes"] / small_bytes, 3) for w, r in epochs.items()}
    chaos = child_report("streaming_chaos", "--data", str(args.data), "--gb", f"{args.small_gb:g}")
    peer_chaos = child_report("raydata_peer_chaos", "--data", str(small))
    common.report("streaming", {
        "peak_rss_mb": streamed_large["peak_rss_mb"],
        "peak_rss_mb_small": max(r["peak_rss_mb"] for r in small_runs),
        "peak_rss_mb_in_memory": max(r["peak_rss_mb"] for r in memory_runs),
        "rss_ratio_8g_to_1g": round(streamed_large["peak_rss_mb"] / max(r["peak_rss_mb"] for r in small_runs), 3),
        "memory_per_worker_mb": MEMORY_BUDGET_MIB,   # MiB, as the peaks (VmHWM / 1024)
        "read_amplification": max(amplification.values()),
        "read_amplification_by_workers": amplification,
        "stream_to_memory_ratio": round(streamed_rate / memory_rate, 3),
        "samples_per_s": {"streamed": streamed_rate, "in_memory": memory_rate, "ray_train_ray_data": peer_rate},
        "samples_per_s_runs": {"streamed": [r["samples_per_s"] for r in small_runs],
                               "in_memory": [r["samples_per_s"] for r in memory_runs],
                               "ray_train_ray_data": [r["samples_per_s"] for r in peer_runs]},
        "ratio_to_ray_data": round(streamed_rate / peer_rate, 3),
        "repeated_samples": chaos["repeated_samples"], "missing_samples": chaos["missing_samples"],
        "peer_repeated_samples": peer_chaos["peer_repeated_samples"],
        "peer_missing_samples": peer_chaos["peer_missing_samples"],
        "time_to_first_step_s": streamed_large["time_to_first_step_s"],
        "time_to_first_step_s_small": streamed_small["time_to_first_step_s"],
        "preprocess_stats_s": streamed_large["stats_s"],
        "preprocess_stats_s_small": streamed_small["stats_s"],
        "data_bytes": {"small": small_bytes,
                       "large": sum(p.stat().st_size for p in large.glob("part-*.parquet"))},
        "runs": {"small": streamed_small, "large": streamed_large, "in_memory": in_memory,
                 **{f"epoch_{w}": r for w, r in epochs.items()}, "ray_data_peer": peer_runs[0], "chaos": chaos,
                 "peer_chaos": peer_chaos},
        "workers": 2, "global_batch": BATCH, "model": f"mlp 28-{HIDDEN[0]}-2, adam", "steps": args.steps,
    }, args.save)


if __name__ == "__main__":
    main()
