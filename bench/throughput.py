"""Training throughput: elastrain on 2 workers vs plain PyTorch DDP under torchrun (2 processes).

Same model, data and global batch; runs interleaved (A B A B ...). Target: median ratio >= 0.97.
The report's `step_ms` is elastrain's mean step (rank 0, median over the repetitions): compute
(forward, backward, update), all_reduce, bookkeeping (the rest of the step's interval), total.
Usage: python -m bench.throughput [--repetitions 5] [--steps 600] [--save]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import common, peer


def main() -> None:
    args = common.arguments(__doc__, steps=600, repetitions=5)
    steps = args.steps
    from elastrain.elastic import run_job

    common.start_ray()
    ours, theirs, breakdowns = [], [], []
    for _ in range(args.repetitions):
        with tempfile.TemporaryDirectory() as home:
            result = run_job(common.elastrain_spec(workers=2, max_steps=steps), Path(home))
        ours.append(result.samples_per_s)
        breakdowns.append(result.step_ms)
        folder = peer.run_dir()
        process = peer.launch(steps, folder, ["--standalone"])
        process.wait()
        peer.stop(process, folder)
        theirs.append(peer.samples_per_s(peer.step_times(folder), common.BATCH))
        print(f"elastrain {ours[-1]:.0f} samples/s, ddp {theirs[-1]:.0f} samples/s, elastrain step ms "
              f"{breakdowns[-1]}", file=sys.stderr)
    common.report("throughput", {
        "elastrain_samples_per_s": common.median(ours), "ddp_samples_per_s": common.median(theirs),
        "ratio": common.median([a / b for a, b in zip(ours, theirs, strict=True)]),
        "step_ms": {key: common.median([b[key] for b in breakdowns]) for key in breakdowns[0]},
        "repetitions": args.repetitions, "steps": steps, "workers": 2, "global_batch": common.BATCH,
        "model": f"mlp 64-{'-'.join(map(str, common.HIDDEN))}-10, adam", "peer": "torchrun --standalone, DDP gloo",
    }, args.save)


if __name__ == "__main__":
    main()
