"""The peer for bench/streaming.py's throughput: Ray Train 2.60's TorchTrainer fed by Ray Data's
`streaming_split` over the same Parquet shards, the same model (an MLP 28-64-2, Adam, lr 1e-3), the
same global batch and the same workers (2 of 0.5 CPU); samples/s between the first and the last
step rank 0 completed, as elastrain's status counts them.

The recipe is Ray's own ("Data loading for ML training": `ray.data.read_parquet`, the dataset
passed to the trainer, `ray.train.get_dataset_shard`, `iter_torch_batches` of the global batch
over the world size, DDP through `prepare_model`). Features go in as stored (the HIGGS-like
features are standard normal already, so no scaling pass is owed), the label as a class.

    python -m bench.raydata_peer --data FOLDER [--steps 300]   # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

BATCH = 4096
HIDDEN = 64
FEATURES = [f"f{j}" for j in range(28)]


def train_loop(config: dict) -> None:
    """One Ray Train worker: `config["steps"]` steps of its share of each global batch; rank 0
    writes the time of each completed step to `config["log"]`."""
    import ray.train
    import torch
    from ray.train.torch import prepare_model
    from torch import nn

    torch.manual_seed(0)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = prepare_model(nn.Sequential(nn.Linear(len(FEATURES), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    shard = ray.train.get_dataset_shard("train")
    times = []
    while len(times) < config["steps"]:
        for batch in shard.iter_torch_batches(batch_size=BATCH // world, dtypes=torch.float32, drop_last=True):
            x = torch.stack([batch[name] for name in FEATURES], dim=1)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), batch["label"].long()).backward()
            optimizer.step()
            times.append(time.time())
            if len(times) >= config["steps"]:
                break
    if rank == 0:
        Path(config["log"]).write_text(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder of part-*.parquet shards")
    parser.add_argument("--steps", type=int, default=300, help="steps to time (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs each (default 0.5)")
    args = parser.parse_args()
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"   # the default in 2.60; set in case the environment turned it off
    import ray
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as home:
        log = Path(home) / "steps.json"
        files = sorted(str(p) for p in args.data.glob("part-*.parquet"))
        data = ray.data.read_parquet(files).select_columns([*FEATURES, "label"])
        trainer = TorchTrainer(
            train_loop, train_loop_config={"steps": args.steps, "log": str(log)},
            scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False,
                                         resources_per_worker={"CPU": args.cpus_per_worker}),
            run_config=RunConfig(name="raydata-peer", storage_path=str(Path(home) / "storage")),
            datasets={"train": data})
        began = time.time()
        trainer.fit()
        times = json.loads(log.read_text())
    ray.shutdown()
    rate = (len(times) - 1) * BATCH / (times[-1] - times[0])
    print(json.dumps({"samples_per_s": round(rate, 1), "steps": len(times), "wall_s": round(time.time() - began, 1),
                      "time_to_first_step_s": round(times[0] - began, 2)}))


if __name__ == "__main__":
    main()
