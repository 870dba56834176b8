"""Tree models on the elastic pool (issue 31): XGBoost `hist` across workers, resized in place.

Measured, in one run:

- parity: on `builtin:breast_cancer`, `builtin:wine` and a HIGGS-like set (`bench.higgs_like`),
  a job resized 3 -> 1 -> 3 -> 2 by chaos (1 -> 3 -> 2 within it; the workers that left wait as
  warm standbys) against single-process `xgboost.train` with the same cuts, rows and parameters:
  the largest difference of their predicted probabilities over every row, and the validation
  AUC / accuracy of both;
- speed: the HIGGS-like set on 2 workers x 1 thread against `xgboost.train` with 2 threads in one
  process, the same rows, cuts and rounds: rounds/s of each (from the first completed round to the
  last on both sides: building the data matrices is left out), and 3 workers reported. Like for
  like, twice: the peer evaluating nothing and ours only after the last round
  (`model.eval_every` = rounds; `speed_ratio_to_xgboost`), and both evaluating the validation
  rows every round, ours with its metrics and the peer with XGBoost's own AUC and log loss
  (`..._evaluating`);
- recovery, on a small HIGGS-like set (`--recovery-gb`) and on the large one (reported apart): one
  of 2 workers SIGKILLed while a round runs (after round 3): seconds from the last round completed
  before the kill to the first completed by the re-formed group (an upper bound of kill -> next
  round), and rounds lost (completed rounds the group had to redo);
- the peer's recovery, on the small set: Ray Train 2.60's XGBoostTrainer on the same rows and
  parameters, 2 workers, a checkpoint every 10 rounds, one worker SIGKILLed inside round 14
  (`bench.raytrain_xgb_peer`).

- memory: the peak resident memory of each of 2 workers training 10 rounds on the data issue's
  sharded 1 GB and 8 GB HIGGS-like sets (`bench.streaming`), from XGBoost's external memory
  (`rss_ratio_8g_to_1g`: the largest worker's peak on 8 GB over that on 1 GB).

    python -m bench.trees [--higgs-gb 1] [--recovery-gb 0.05] [--rounds 30] [--memory-gb 8] [--data DIR] [--save]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import common, raytrain_xgb_peer, streaming
from bench.higgs_like import BYTES_PER_ROW, rows

RESIZES = "scale=1@step=3,scale=3@step={grow},scale=2@step={shrink}"
MEMORY_ROUNDS = 10


def higgs_file(folder: Path, gigabytes: float) -> Path:
    """A HIGGS-like table of `gigabytes` as one Parquet file (written once, then reused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"higgs-{gigabytes:g}g.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        total = int(gigabytes * 1e9 / BYTES_PER_ROW)
        print(f"writing {total:,} rows to {path} ...", file=sys.stderr)
        x, y = rows(0, total, seed=0)
        pq.write_table(pa.table({**{f"f{j}": x[:, j] for j in range(x.shape[1])}, "label": y}), path,
                       row_group_size=1 << 17)
    return path


def job(source: str, rounds: int, workers: int, **model) -> dict:
    """A gbdt job on `source` (unscaled features, a 20 % validation split) on up to `workers` workers."""
    return {"name": "bench-trees", "data": {"source": source, "target": "label" if "parquet" in source else "target",
                                            "scaling": "none", "split_seed": 0},
            "model": {"kind": "gbdt", "rounds": rounds, "max_depth": 6, "learning_rate": 0.1, **model},
            "train": {"seed": 0},
            "resources": {"workers": {"min": 1, "max": workers}, "cpus_per_worker": 0.5, "wait_timeout_s": 300}}


def reference(spec, threads: int, evaluate: bool = False) -> tuple:
    """Single-process `xgboost.train` on the job's training rows in the job's order, with its cuts
    and parameters: (booster, seconds per round after the first, the job's learner, its data).
    With `evaluate`, each round is followed by XGBoost's own evaluation of the validation rows
    (AUC and log loss, as `xgboost.train(evals=...)` does for early stopping and curves)."""
    import xgboost

    from elastrain.train.learner import build_learner

    learner = build_learner(spec)
    data = learner.data
    order = np.random.default_rng([spec.train.seed, 0]).permutation(data.n_train)
    x, y = data.train_rows(order)
    matrix = xgboost.QuantileDMatrix(x, label=y, ref=learner.cuts, max_bin=spec.model.max_bin, nthread=threads)
    params = {**learner.params, "nthread": threads}
    evals = []
    if evaluate:
        _, val_x, val_y = every_row(data)
        evals = [(xgboost.DMatrix(val_x, label=val_y, nthread=threads), "validation")]
        params["eval_metric"] = ["auc", "logloss"]
    booster = xgboost.Booster(params, [matrix, *(m for m, _ in evals)])
    booster.update(matrix, 0)
    began = time.perf_counter()
    for round_ in range(1, learner.total_steps):
        booster.update(matrix, round_)
        if evals:
            booster.eval_set(evals, round_)
    per_round = (time.perf_counter() - began) / max(1, learner.total_steps - 1)
    return booster, per_round, learner, data


def probabilities(booster, x: np.ndarray) -> np.ndarray:
    import xgboost

    return booster.predict(xgboost.DMatrix(x))


def every_row(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all features, validation features, validation targets) of a job's data."""
    train_x, _ = data.train_rows(np.arange(data.n_train))
    val = list(data.val_chunks(0, 1))
    val_x, val_y = np.concatenate([c for c, _ in val]), np.concatenate([t for _, t in val])
    return np.concatenate([train_x, val_x]), val_x, val_y


def scores(p: np.ndarray, y: np.ndarray) -> dict:
    """Validation AUC (one-vs-rest for several classes) and accuracy of probabilities `p`."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    if p.ndim == 1:
        return {"auc": round(float(roc_auc_score(y, p)), 6), "accuracy": round(float(accuracy_score(y, p > 0.5)), 6)}
    return {"auc": round(float(roc_auc_score(y, p, multi_class="ovr")), 6),
            "accuracy": round(float(accuracy_score(y, p.argmax(axis=1))), 6)}


def run(spec, chaos: str | None = None):
    """The job run as `elastrain run` runs it, from this process; its result."""
    from elastrain.elastic import RunOptions, parse_chaos, run_here

    home = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    return run_here(spec, home, None, RunOptions(chaos=parse_chaos(chaos)))


def parity(source: str, rounds: int) -> dict:
    """A job resized 3 -> 1 -> 3 -> 2 against single-process xgboost.train (see the module's doc)."""
    import xgboost

    from elastrain.spec import validate_spec

    spec = validate_spec(job(source, rounds, 3))
    theirs, _, _, data = reference(spec, threads=1)
    chaos = RESIZES.format(grow=max(4, rounds // 10), shrink=max(5, rounds // 2))
    result = run(spec, chaos)
    ours = xgboost.Booster(model_file=str(Path(result.model_path) / "model.ubj"))
    everything, val_x, val_y = every_row(data)
    ours_val, theirs_val = scores(probabilities(ours, val_x), val_y), scores(probabilities(theirs, val_x), val_y)
    from elastrain.runs import RunFolder

    resized = [e["workers"] for e in RunFolder(Path(result.run_dir)).read_events() if e["kind"] == "resized"]
    return {"source": source, "rounds": rounds, "resized": resized,
            "max_abs_pred_diff": float(np.abs(probabilities(ours, everything)
                                              - probabilities(theirs, everything)).max()),
            "ours": ours_val, "xgboost": theirs_val,
            "equal_to_4_decimals": all(round(ours_val[k], 4) == round(theirs_val[k], 4) for k in ours_val)}


def speed(source: str, rounds: int, workers: int, n_train: int, eval_every: int = 1) -> float:
    """Our rounds/s on `workers` workers x 1 thread, evaluating every `eval_every` rounds (from the
    first completed round to the last; a round is `n_train` samples)."""
    from elastrain.spec import validate_spec

    spec = validate_spec(job(source, rounds, workers, eval_every=eval_every) | {"resources": {
        "workers": {"min": workers, "max": workers}, "cpus_per_worker": min(1.0, (os.cpu_count() or 1) / workers),
        "wait_timeout_s": 300}})
    return round(run(spec).samples_per_s / n_train, 3)


def recovery(source: str, rounds: int) -> dict:
    """One of 2 workers SIGKILLed while a round runs (see the module's doc)."""
    import json

    from elastrain.elastic import RunOptions, run_job
    from elastrain.runs import RunFolder
    from elastrain.spec import validate_spec

    spec = validate_spec(job(source, rounds, 2) | {"resources": {
        "workers": {"min": 1, "max": 2}, "cpus_per_worker": 1, "wait_timeout_s": 300, "warm_standby": False}})
    traces = Path(tempfile.mkdtemp(prefix="bench-trees-trace-"))
    outcome: dict = {}
    home = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    # The controller in this process (a driver actor would not pass the trace hook that names the pids).
    runner = threading.Thread(target=lambda: outcome.update(
        result=run_job(spec, home, options=RunOptions(trace_dir=str(traces)))))
    runner.start()
    killed_after = None

    def step() -> int:
        """The group's completed rounds, from the run's status (the traces hold every row id per round)."""
        statuses = list(home.glob("runs/*/status.json"))
        try:
            return int(json.loads(statuses[0].read_text()).get("step") or 0) if statuses else 0
        except (OSError, ValueError):   # being rewritten
            return 0

    while runner.is_alive() and killed_after is None:
        time.sleep(0.05)
        pids = {int(p.stem.split("-")[1]) for p in traces.glob("worker-*.jsonl")}
        if len(pids) == 2 and step() >= 3:
            time.sleep(0.3 * (time.monotonic() % 1))   # somewhere inside the next round
            killed_after = step()
            os.kill(max(pids), signal.SIGKILL)
    runner.join()
    events = RunFolder(Path(outcome["result"].run_dir)).read_events()
    lost = next(e for e in events if e["kind"] == "worker_lost")
    recovered = next(e for e in events if e["kind"] == "recovered")
    return {"recovery_s": round(recovered["duration_s"], 3), "lost_rounds": max(0, killed_after - lost["step"]),
            "killed_after_round": killed_after, "resumed_at_round": lost["step"]}


def memory(folder: Path, gigabytes: float, rounds: int) -> dict:
    """The peak resident memory of each of 2 workers (x 1 thread) training on the data issue's
    sharded HIGGS-like set of `gigabytes` (`bench.streaming`), from XGBoost's external memory;
    each run `elastrain run` in a process and local Ray of its own."""
    shards = streaming.data_set(folder, gigabytes)
    spec = job(f"parquet:{shards}/*.parquet", rounds, 2) | {"resources": {
        "workers": {"min": 2, "max": 2}, "cpus_per_worker": 1, "wait_timeout_s": 600}}
    spec["data"].pop("split_seed")   # sharded data is split by a hash of the row id
    figures = streaming.run(spec, Path(tempfile.mkdtemp(prefix=f"bench-trees-memory-{gigabytes:g}g-")))
    return {k: figures[k] for k in ("peak_rss_mb", "samples_per_s", "wall_s", "stats_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--higgs-gb", type=float, default=1.0, help="the HIGGS-like set's size (default 1)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the HIGGS-like runs (default 30)")
    parser.add_argument("--recovery-gb", type=float, default=0.05,
                        help="the HIGGS-like set of the recovery case, ours and the peer's (default 0.05: "
                             "rounds well under a second on 2 cores, so that the figure is the recovery's, not "
                             "a round's; the --higgs-gb set is also measured, reported apart)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-trees")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="the large sharded set of the memory case, against the 1 GB one (default 8)")
    parser.add_argument("--shards", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-streaming",
                        help="where the data issue's sharded sets are (written once, then reused: bench.streaming)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    common.start_ray()
    higgs = f"parquet:{higgs_file(args.data, args.higgs_gb)}"
    # Rounds of milliseconds on the small sets: enough of them that the grow (asked at a tenth of
    # them) lands before the last shrink (at half) however long attaching the standbys takes.
    parities = [parity("builtin:breast_cancer", 800), parity("builtin:wine", 800), parity(higgs, args.rounds)]
    from elastrain.spec import validate_spec

    _, per_round, learner, data = reference(validate_spec(job(higgs, args.rounds, 1)), threads=2)
    peer_rounds_s = round(1 / per_round, 3)
    _, per_round_evaluating, _, _ = reference(validate_spec(job(higgs, args.rounds, 1)), threads=2, evaluate=True)
    evaluating_rounds_s = round(1 / per_round_evaluating, 3)
    # Like for like: the peer evaluates nothing, ours only after the last round (model.eval_every);
    # and both evaluating the validation rows every round.
    two, three = (speed(higgs, args.rounds, workers, data.n_train, eval_every=args.rounds) for workers in (2, 3))
    two_evaluating = speed(higgs, args.rounds, 2, data.n_train, eval_every=1)
    small = higgs_file(args.data, args.recovery_gb)
    recovered = recovery(f"parquet:{small}", args.rounds)
    peer = raytrain_xgb_peer.recovery(small, learner.params, args.rounds,
                                      kill_after=raytrain_xgb_peer.CHECKPOINT_EVERY + 3)
    recovered_large = recovery(higgs, args.rounds)
    memory_runs = {size: memory(args.shards, size, MEMORY_ROUNDS) for size in (1.0, args.memory_gb)}
    common.report("trees", {
        "max_abs_pred_diff": max(p["max_abs_pred_diff"] for p in parities),
        "metrics_equal_to_4_decimals": all(p["equal_to_4_decimals"] for p in parities),
        "speed_ratio_to_xgboost": round(two / peer_rounds_s, 3),
        "speed_ratio_to_xgboost_evaluating": round(two_evaluating / evaluating_rounds_s, 3),
        "rounds_per_s": {"ours_2x1": two, "ours_3x1": three, "xgboost_2_threads": peer_rounds_s,
                         "ours_2x1_evaluating": two_evaluating, "xgboost_2_threads_evaluating": evaluating_rounds_s},
        **{k: recovered[k] for k in ("recovery_s", "lost_rounds")},
        "peer_recovery_s": peer["peer_recovery_s"], "peer_lost_rounds": peer["peer_lost_rounds"],
        "rss_ratio_8g_to_1g": round(memory_runs[args.memory_gb]["peak_rss_mb"] / memory_runs[1.0]["peak_rss_mb"], 3),
        "memory": {f"{size:g}g": figures for size, figures in memory_runs.items()},
        "higgs_gb": args.higgs_gb, "recovery_gb": args.recovery_gb, "parity": parities, "recovery": recovered,
        "peer": peer, "recovery_on_higgs_gb": recovered_large,
    }, args.save)


if __name__ == "__main__":
    main()
