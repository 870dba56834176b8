"""Durable checkpoint overhead: step throughput with asynchronous checkpoints every N steps vs
none, on the same 2-worker job, interleaved. Target overhead <= 3 %.

Usage: python -m bench.checkpoint [--repetitions 3] [--steps 1500] [--save]
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench import common

EVERY = 50


def throughput(steps: int, every: int | None) -> tuple[float, float | None]:
    """(samples/s, mean seconds the training loop spent snapshotting per checkpoint) of one run."""
    from elastrain.elastic import run_job
    from elastrain.elastic.events import read_events

    with tempfile.TemporaryDirectory() as home:
        result = run_job(common.elastrain_spec(workers=2, max_steps=steps, every_steps=every), Path(home))
        snapshots = [e["detail"]["snapshot_s"] for e in read_events(Path(result.run_dir)) if e["kind"] == "checkpoint"]
    return result.samples_per_s, statistics.mean(snapshots) if snapshots else None


def main() -> None:
    args = common.arguments(__doc__, steps=1500)
    common.start_ray()
    plain, checkpointed, snapshot_s = [], [], []
    for _ in range(args.repetitions):
        plain.append(throughput(args.steps, None)[0])
        rate, snapshot = throughput(args.steps, EVERY)
        checkpointed.append(rate)
        snapshot_s.append(snapshot)
    overheads = [100 * (1 - b / a) for a, b in zip(plain, checkpointed, strict=True)]
    common.report("checkpoint", {
        "overhead_pct": common.median(overheads), "samples_per_s_without": common.median(plain),
        "samples_per_s_with": common.median(checkpointed), "snapshot_s": common.median(snapshot_s),
        "every_steps": EVERY, "repetitions": args.repetitions, "workers": 2,
    }, args.save)


if __name__ == "__main__":
    main()
