"""The peer: a plain PyTorch DDP training script (gloo), launched by torchrun.

Same workload as elastrain's benchmark job. Rank 0 logs every completed step with its wall
time; with --checkpoint-every it saves (model, optimizer, step) and resumes from it when
torchrun restarts the workers after a failure. Each rank writes its pid to --run-dir.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", default="1024,512")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--fused", action="store_true", help="PyTorch's fused Adam (as elastrain uses)")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    (run_dir / f"pid-{rank}").write_text(str(os.getpid()))

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = torch.from_numpy((x - x.mean()) / x.std())
    y = torch.from_numpy(digits.target.astype(np.int64))
    torch.manual_seed(0)
    sizes = [64, *map(int, args.hidden.split(","))]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = DistributedDataParallel(nn.Sequential(*layers, nn.Linear(sizes[-1], 10)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=args.fused or None)
    checkpoint = run_dir / "checkpoint.pt"
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    log = (run_dir / "steps.log").open("a") if rank == 0 else None
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    per_rank = args.batch // world
    while step < args.steps:
        start = (step * args.batch) % (len(y) - args.batch)
        mine = order[start + rank * per_rank: start + (rank + 1) * per_rank]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()
        optimizer.step()
        step += 1
        if log:
            log.write(f"{step} {time.time()}\n")
            log.flush()
        if args.checkpoint_every and step % args.checkpoint_every == 0 and rank == 0:
            temporary = checkpoint.with_suffix(".tmp")
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                       temporary)
            os.replace(temporary, checkpoint)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
