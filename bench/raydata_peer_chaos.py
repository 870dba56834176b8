"""The peer's side of exactly once under chaos (issue 29): Ray Train 2.60 + Ray Data's
`streaming_split` (`bench.raydata_peer`'s recipe) through one epoch of the same shards while a
worker is SIGKILLed and the group goes 2 -> 1 -> 3 -> 2, then its driver is lost; which rows the
epoch trained, from a trace of every step's rows.

How the chaos reaches the peer, by Ray Train's own mechanisms:
- the worker kill: rank 1 SIGKILLs itself at the fraction of the epoch where `bench.streaming_chaos`
  kills a worker (6 %); Ray Train restarts the group from the latest reported checkpoint
  (`FailureConfig(max_failures=1)`);
- a resize: Ray Train changes a group's size only by restarting it from its latest checkpoint
  (elastic `ScalingConfig(num_workers=(min, max))` included); here each size is a `fit` of that
  many workers that resumes from the previous one's latest checkpoint, the previous one having
  trained up to the step where the resize falls;
- the driver's loss: the same, a `fit` that resumes from the latest checkpoint in storage.
A checkpoint (model, optimizer, step) is reported every 1/20 of the epoch, as the elastrain job's.
Ray Data's iterator keeps no position, so each restart reads its split from the start again, and
the loop trains on until the epoch's step count (the schedule the checkpoint's step carries on).

Rows are told apart by a 64-bit hash of their 28 float32 features (the shards hold no row id);
the data set's own hashes are checked distinct. The epoch's history is each step's latest attempt,
as for elastrain; repeated = rows trained more than once in it, missing = rows never trained. The
peer trains on every row (its recipe holds no validation split) in global batches of 4,096 (4,095
on 3 workers: Ray's recipe splits the global batch by the world size).

    python -m bench.raydata_peer_chaos --data FOLDER    # one JSON line
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.raydata_peer import BATCH, FEATURES, HIDDEN
from bench.streaming_chaos import CHECKPOINTS_PER_EPOCH, KILL_AT, SCALE_1_AT, SCALE_2_AT, SCALE_3_AT

DRIVER_KILLED_AT = 0.6   # after the resizes have settled, as the elastrain side's driver SIGKILL
# (world size, the epoch fraction the segment trains up to): the sizes between the resizes
SEGMENTS = [(2, SCALE_1_AT), (1, SCALE_3_AT), (3, SCALE_2_AT), (2, DRIVER_KILLED_AT), (2, 1.0)]
_HEADER = "<qqqq"   # segment, attempt's first step, step, rows
_HEADER_BYTES = struct.calcsize(_HEADER)
_MULTIPLIERS = np.random.default_rng(20261206).integers(1, 2**63, size=len(FEATURES), dtype=np.uint64) | 1


def row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit identity of each float32 row of `x` (n, 28): its bits times odd constants, summed
    modulo 2**64."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (bits * _MULTIPLIERS).sum(axis=1, dtype=np.uint64).view(np.int64)


def train_loop(config: dict) -> None:
    """One Ray Train worker of a segment: resume from the latest checkpoint (this fit's, else the
    previous segment's), train to `config["stop_at"]`, append each step's row hashes to the trace."""
    import ray.train
    import torch
    from ray.train.torch import prepare_model
    from torch import nn

    torch.manual_seed(0)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = nn.Sequential(nn.Linear(len(FEATURES), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    resume = checkpoint.path if checkpoint is not None else config["resume"]
    if resume:
        with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(resume) as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    first = step
    model = prepare_model(model)
    shard = ray.train.get_dataset_shard("train")
    with open(Path(config["trace"]) / f"segment{config['segment']}-rank{rank}-from{first}.bin", "ab") as trace:
        for batch in shard.iter_torch_batches(batch_size=BATCH // world, dtypes=torch.float32, drop_last=True):
            if step >= config["stop_at"]:
                break
            killed = Path(config["trace"]) / "killed"
            if config["kill_at"] == step and rank == 1 and not killed.exists():   # once
                killed.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            x = torch.stack([batch[name] for name in FEATURES], dim=1)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), batch["label"].long()).backward()
            optimizer.step()
            step += 1
            hashes = row_hashes(x.numpy())
            trace.write(struct.pack(_HEADER, config["segment"], first, step, len(hashes)) + hashes.tobytes())
            trace.flush()
            if step % config["every"] == 0:
                _report(step, rank, getattr(model, "module", model), optimizer)


def _report(step: int, rank: int, model, optimizer) -> None:
    """Report step `step` to Ray Train; rank 0 with a checkpoint of the model, optimizer and step."""
    import ray.train
    import torch
    from ray.train import Checkpoint

    if rank != 0:
        ray.train.report({"step": step})
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                   Path(folder) / "state.pt")
        ray.train.report({"step": step}, checkpoint=Checkpoint.from_directory(folder))


def read_trace(folder: Path) -> dict[int, tuple[tuple[int, int], list[np.ndarray]]]:
    """Each step's latest attempt: step -> ((segment, attempt's first step), its ranks' row hashes)."""
    steps: dict[int, tuple[tuple[int, int], list[np.ndarray]]] = {}
    for path in sorted(folder.glob("segment*.bin")):
        raw = path.read_bytes()
        at = 0
        while at + _HEADER_BYTES <= len(raw):
            segment, first, step, rows = struct.unpack_from(_HEADER, raw, at)
            end = at + _HEADER_BYTES + 8 * rows
            if end > len(raw):   # cut short by the SIGKILL
                break
            hashes = np.frombuffer(raw[at + _HEADER_BYTES:end], np.int64)
            at = end
            key = (segment, first)
            held = steps.get(step)
            if held is None or key > held[0]:
                steps[step] = (key, [hashes])
            elif key == held[0]:
                held[1].append(hashes)
    return steps


def data_hashes(files: list[str]) -> np.ndarray:
    """The hashes of every row of the shards, a file at a time."""
    import pyarrow.parquet as pq

    from elastrain.data.shards import _table_rows  # the workers' own Arrow-to-rows conversion

    return np.concatenate([row_hashes(_table_rows(pq.read_table(path, columns=[*FEATURES, "label"]), FEATURES,
                                                  "label")[0]) for path in files])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder of part-*.parquet shards")
    parser.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs each (default 0.5)")
    args = parser.parse_args()
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"
    import ray
    import ray.data
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    began = time.time()
    files = sorted(str(p) for p in args.data.glob("part-*.parquet"))
    hashes = data_hashes(files)
    distinct = np.unique(hashes)
    steps = len(hashes) // BATCH
    every = max(1, steps // CHECKPOINTS_PER_EPOCH)
    kill_at = max(1, round(KILL_AT * steps))
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    sizes = []
    with tempfile.TemporaryDirectory() as home:
        trace = Path(home) / "trace"
        trace.mkdir()
        resume = None
        for segment, (world, until) in enumerate(SEGMENTS):
            data = ray.data.read_parquet(files).select_columns([*FEATURES, "label"])
            config = {"segment": segment, "resume": resume, "stop_at": round(until * steps), "every": every,
                      "kill_at": kill_at if segment == 0 else -1, "trace": str(trace)}
            trainer = TorchTrainer(
                train_loop, train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=world, use_gpu=False,
                                             resources_per_worker={"CPU": args.cpus_per_worker}),
                run_config=RunConfig(name=f"peer-chaos-{segment}", storage_path=str(Path(home) / "storage"),
                                     failure_config=FailureConfig(max_failures=1)),
                datasets={"train": data})
            result = trainer.fit()
            sizes.append(world)
            if result.checkpoint is not None:
                resume = result.checkpoint.path
        history = read_trace(trace)
    ray.shutdown()
    final = [history[s] for s in sorted(history)]
    trained = np.concatenate([h for _, ranks in final for h in ranks])
    seen, counts = np.unique(trained, return_counts=True)
    print(json.dumps({
        "peer_repeated_samples": int((counts > 1).sum()),
        "peer_missing_samples": int(len(distinct) - np.isin(distinct, seen, assume_unique=True).sum()),
        "rows": len(hashes), "distinct_row_hashes": len(distinct),
        "foreign_rows_trained": int((~np.isin(seen, distinct, assume_unique=True)).sum()),
        "steps": steps, "steps_traced": len(history),
        "steps_untraced": len(set(range(1, steps + 1)) - set(history)),
        "world_sizes": sizes, "kill_at_step": kill_at, "checkpoint_every_steps": every,
        "segments_end_at_step": [round(until * steps) for _, until in SEGMENTS],
        "wall_s": round(time.time() - began, 1),
    }))


if __name__ == "__main__":
    main()
