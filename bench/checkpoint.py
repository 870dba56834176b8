"""Durable checkpoint overhead: step throughput with asynchronous checkpoints every N steps vs
none, on the same 2-worker job, interleaved. Target overhead <= 3 %.

Run-to-run noise on a small machine is larger than the effect, so the runs come in pairs (the
order alternating, to cancel drift) until the spread of the overhead, the half-width of its 95 %
confidence interval (2 standard errors of the mean of the pairs' overheads), is under the 3 %
target: at least --repetitions pairs, at most four times as many. The report gives both.

Usage: python -m bench.checkpoint [--repetitions 5] [--steps 1000] [--save]
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path

from bench import common

EVERY = 50
TARGET_PCT = 3.0


def throughput(steps: int, every: int | None) -> tuple[float, float | None]:
    """(samples/s, mean seconds the training loop spent snapshotting per checkpoint) of one run."""
    from elastrain.elastic import run_job
    from elastrain.runs import RunFolder

    with tempfile.TemporaryDirectory() as home:
        result = run_job(common.elastrain_spec(workers=2, max_steps=steps, every_steps=every), Path(home))
        events = RunFolder(Path(result.run_dir)).read_events()
        snapshots = [e["detail"]["snapshot_s"] for e in events if e["kind"] == "checkpoint"]
    return result.samples_per_s, statistics.mean(snapshots) if snapshots else None


def main() -> None:
    args = common.arguments(__doc__, steps=1000, repetitions=5)
    common.start_ray()
    plain, checkpointed, snapshot_s = [], [], []
    while len(plain) < 4 * args.repetitions:
        for every in (None, EVERY) if len(plain) % 2 == 0 else (EVERY, None):
            rate, snapshot = throughput(args.steps, every)
            if every is None:
                plain.append(rate)
            else:
                checkpointed.append(rate)
                snapshot_s.append(snapshot)
        overheads = [100 * (1 - b / a) for a, b in zip(plain, checkpointed, strict=True)]
        spread = spread_pct(overheads)
        print(f"pair {len(plain)}: overhead {overheads[-1]:+.1f} %, spread so far {spread:.1f} %", file=sys.stderr)
        if len(plain) >= args.repetitions and spread < TARGET_PCT:
            break
    common.report("checkpoint", {
        "overhead_pct": round(statistics.mean(overheads), 2), "spread_pct": round(spread, 2),
        "overhead_median_pct": common.median(overheads), "samples_per_s_without": common.median(plain),
        "samples_per_s_with": common.median(checkpointed), "snapshot_s": common.median(snapshot_s),
        "every_steps": EVERY, "pairs": len(plain), "steps": args.steps, "workers": 2,
    }, args.save)


def spread_pct(overheads: list[float]) -> float:
    """Half-width of the 95 % confidence interval of the mean overhead (2 standard errors);
    infinite from fewer than two pairs."""
    if len(overheads) < 2:
        return math.inf
    return 2 * statistics.stdev(overheads) / math.sqrt(len(overheads))


if __name__ == "__main__":
    main()
