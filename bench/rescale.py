"""Scale-out and scale-in: how long the running workers pause while one joins (after its process
is up: re-forming the group and broadcasting the state) or leaves. Target <= 1 s each.

Usage: python -m bench.rescale [--repetitions 3] [--save]
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from bench import common


def once(steps: int) -> tuple[float, float]:
    """(join pause, leave pause) in seconds, from one job's scale_out and scale_in events."""
    from elastrain.elastic import RunOptions, parse_chaos, run_job
    from elastrain.runs import RunFolder

    spec = common.elastrain_spec(workers=2, max_steps=steps, min_workers=1)
    with tempfile.TemporaryDirectory() as home:
        result = run_job(spec, Path(home), options=RunOptions(chaos=parse_chaos("scale=1@step=20,scale=2@step=40")))
        events = RunFolder(Path(result.run_dir)).read_events()
    join = next(e for e in events if e["kind"] == "scale_out")
    leave = next(e for e in events if e["kind"] == "scale_in")
    return join["duration_s"], leave["duration_s"]


def main() -> None:
    args = common.arguments(__doc__, steps=1500)
    common.start_ray()
    joins, leaves = zip(*(once(args.steps) for _ in range(args.repetitions)), strict=True)
    common.report("rescale", {
        "join_pause_s": common.median(list(joins)), "leave_pause_s": common.median(list(leaves)),
        "join_pause_max_s": max(joins), "leave_pause_max_s": max(leaves), "repetitions": args.repetitions,
        "workers": "2 -> 1 -> 2", "state_mb": _state_mb(),
    }, args.save)


def _state_mb() -> float:
    """Size of the broadcast training state (parameters and Adam's two moments)."""
    sizes = [64, *common.HIDDEN, 10]
    parameters = sum(a * b + b for a, b in itertools.pairwise(sizes))
    return round(3 * parameters * 4 / 2**20, 1)


if __name__ == "__main__":
    main()
