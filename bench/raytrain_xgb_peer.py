"""The peer for bench/trees.py's recovery case: Ray Train 2.60's `XGBoostTrainer` (Train V2) on the
same rows (each worker reads its half of the Parquet file) and parameters, 2 workers x 1 thread,
checkpointing every CHECKPOINT_EVERY rounds with `RayTrainReportCallback` and resuming from the
latest checkpoint after a failure (`FailureConfig(max_failures=3)`), as Ray's docs show.

Each worker appends every completed round's number and wall time (and its pid) to a file this
process reads while `fit()` runs in a thread. Once round KILL_AFTER has completed, one worker is
SIGKILLed inside the next round; Ray Train then stops the group and starts a new one, which loads
the checkpoint. Measured: seconds from the kill to the next completed round, and completed rounds
lost (the last completed before the kill minus the round the new group resumed from).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

CHECKPOINT_EVERY = 10


def train_loop(config: dict) -> None:
    """One Ray Train worker: its shard as a QuantileDMatrix, rounds from the latest checkpoint on."""
    import numpy as np
    import pyarrow.parquet as pq
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    context = ray.train.get_context()
    # This worker's contiguous half of the rows, read here: Ray Data's read tasks would wait for CPUs
    # the two workers already hold on a 2-core machine.
    table = pq.read_table(config["parquet"])
    share = np.array_split(np.arange(table.num_rows), context.get_world_size())[context.get_world_rank()]
    frame = table.slice(int(share[0]), len(share)).to_pandas()
    matrix = xgboost.QuantileDMatrix(frame.drop(columns="label").to_numpy("float32"), label=frame["label"],
                                     max_bin=config["params"]["max_bin"], nthread=1)
    checkpoint = ray.train.get_checkpoint()
    start = RayTrainReportCallback.get_model(checkpoint) if checkpoint else None
    done = start.num_boosted_rounds() if start else 0
    log = Path(config["log"])
    rank = context.get_world_rank()

    class Rounds(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            with log.open("a") as handle:
                handle.write(json.dumps({"round": model.num_boosted_rounds(), "t": time.time(), "pid": os.getpid(),
                                         "rank": rank, "resumed_from": done}) + "\n")
            return False

    with log.open("a") as handle:   # the pid is known before the first round ends
        handle.write(json.dumps({"round": done, "t": time.time(), "pid": os.getpid(), "rank": rank,
                                 "resumed_from": done, "started": True}) + "\n")
    xgboost.train(config["params"], matrix, num_boost_round=config["rounds"] - done, xgb_model=start,
                  callbacks=[Rounds(), RayTrainReportCallback(frequency=CHECKPOINT_EVERY)])


def recovery(parquet: Path, params: dict, rounds: int, kill_after: int) -> dict:
    """Train with XGBoostTrainer on `parquet`'s rows (2 workers), SIGKILL one worker inside round
    `kill_after` + 1: {"peer_recovery_s", "peer_lost_rounds", ...} (None where it never recovered)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    folder = Path(tempfile.mkdtemp(prefix="bench-raytrain-xgb-"))
    log = folder / "rounds.jsonl"
    log.touch()
    trainer = XGBoostTrainer(
        train_loop, train_loop_config={"params": {**params, "nthread": 1}, "rounds": rounds, "log": str(log),
                                       "parquet": str(parquet)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(folder / "storage"), failure_config=FailureConfig(max_failures=3)))
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=trainer.fit()), daemon=True)
    runner.start()
    killed_at = last_before = None
    while runner.is_alive():
        time.sleep(0.02)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if killed_at is None:
            completed = [r["round"] for r in records if not r.get("started")]
            pids = {r["rank"]: r["pid"] for r in records}
            if completed and max(completed) >= kill_after and len(pids) == 2:
                last_before = max(completed)
                os.kill(pids[1], signal.SIGKILL)
                killed_at = time.time()
    runner.join()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # The group Ray Train started after the kill: its workers' pids, their first rounds, where they resumed.
    restarted = [r for r in records if killed_at and r.get("started") and r["t"] > killed_at]
    new_pids = {r["pid"] for r in restarted}
    first = min((r["t"] for r in records if r["pid"] in new_pids and not r.get("started")), default=None)
    resumed_from = min((r["resumed_from"] for r in restarted), default=None)
    return {"peer_recovery_s": round(first - killed_at, 3) if first else None,
            "peer_lost_rounds": None if resumed_from is None else max(0, last_before - resumed_from),
            "peer_killed_after_round": last_before, "peer_resumed_from_round": resumed_from,
            "peer_checkpoint_every": CHECKPOINT_EVERY}
