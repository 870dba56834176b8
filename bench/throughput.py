"""Training throughput: elastrain on 2 workers vs plain PyTorch DDP under torchrun (2 processes).

Same model, data and global batch; runs interleaved (A B C A B C ...). Target: median ratio to
the plain DDP script (torch.optim.Adam's defaults) >= 0.97. elastrain uses PyTorch's fused
optimizers, which a DDP script can turn on too: the report also gives the ratio to the same DDP
script with fused Adam (`ratio_to_fused_ddp`), so that the gain from the rest is visible.
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
    from elastrain.elastic import RunOptions, run_here

    common.start_ray()
    ours, theirs, fused, breakdowns = [], [], [], []
    for _ in range(args.repetitions):
        with tempfile.TemporaryDirectory() as home:
            # As `elastrain run` runs it: under a driver actor.
            result = run_here(common.elastrain_spec(workers=2, max_steps=steps), Path(home), None, RunOptions())
        ours.append(result.samples_per_s)
        breakdowns.append(result.step_ms)
        theirs.append(ddp_samples_per_s(steps))
        fused.append(ddp_samples_per_s(steps, "--fused"))
        print(f"elastrain {ours[-1]:.0f} samples/s, ddp {theirs[-1]:.0f}, ddp with fused adam {fused[-1]:.0f}; "
              f"elastrain step ms {breakdowns[-1]}", file=sys.stderr)
    common.report("throughput", {
        "elastrain_samples_per_s": common.median(ours), "ddp_samples_per_s": common.median(theirs),
        "ratio": common.median([a / b for a, b in zip(ours, theirs, strict=True)]),
        "ddp_fused_samples_per_s": common.median(fused),
        "ratio_to_fused_ddp": common.median([a / b for a, b in zip(ours, fused, strict=True)]),
        "step_ms": {key: common.median([b[key] for b in breakdowns]) for key in breakdowns[0]},
        "repetitions": args.repetitions, "steps": steps, "workers": 2, "global_batch": common.BATCH,
        "model": f"mlp 64-{'-'.join(map(str, common.HIDDEN))}-10, adam", "peer": "torchrun --standalone, DDP gloo",
    }, args.save)


def ddp_samples_per_s(steps: int, *peer_args: str) -> float:
    """One run of the DDP peer; samples/s from its first logged step to its last."""
    folder = peer.run_dir()
    process = peer.launch(steps, folder, ["--standalone"], peer_args=peer_args)
    process.wait()
    peer.stop(process, folder)
    return peer.samples_per_s(peer.step_times(folder), common.BATCH)


if __name__ == "__main__":
    main()
