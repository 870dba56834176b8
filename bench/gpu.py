"""Training on one GPU: elastrain against a plain PyTorch loop on the same GPU, and the CNN
example's time per epoch on the GPU against the CPU. Needs a CUDA GPU (and a CUDA build of PyTorch).

1. Throughput: a 1-worker elastrain job (`gpus_per_worker: 1`, so the model, optimizer state,
   data and gradient buffer are on the GPU) against the same model, data, batch and optimizer in
   a hand-written loop that keeps everything on the GPU and reads the loss once per step (as a
   loop that logs it does). Interleaved repetitions; target: median ratio >= 0.95.
2. The CNN example (examples/cnn_mnist.yaml, MNIST from datasets/) for one epoch
   with `device: cuda` and with `device: cpu`: seconds per epoch, each side's mean.

Usage: python -m bench.gpu [--repetitions 3] [--steps 2000] [--mnist DIR] [--save]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import common

HIDDEN = (4096, 4096)   # large enough that the GPU, not the Python loop, sets the pace
BATCH = 512
REPO = Path(__file__).resolve().parents[1]


def gpu_spec(steps: int, device: str = "auto"):
    from elastrain.spec import validate_spec

    return validate_spec({
        "name": "bench-gpu", "data": {"source": "synthetic:classification",
                                      "synthetic": {"n_samples": 50_000, "n_features": 256, "n_classes": 10}},
        "model": {"kind": "mlp", "hidden": list(HIDDEN)},
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": BATCH, "max_steps": steps, "seed": 0},
        "resources": {"workers": {"min": 1, "max": 1}, "gpus_per_worker": 1, "device": device},
    }, "bench-gpu")


def elastrain_samples_per_s(steps: int) -> float:
    from elastrain.elastic import run_job

    with tempfile.TemporaryDirectory() as home:
        return run_job(gpu_spec(steps), Path(home)).samples_per_s


def plain_samples_per_s(steps: int) -> float:
    """The same model, data and optimizer in a plain loop on the GPU; samples/s after 20 warm-up steps."""
    import torch

    from elastrain.data import prepare_dataset
    from elastrain.models import build_model
    from elastrain.train.losses import loss_sum

    spec = gpu_spec(steps)
    data = prepare_dataset(spec)
    torch.manual_seed(0)
    model = build_model(spec.model, data.input_shape, data.n_classes).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    x, y = torch.from_numpy(data.x_train).cuda(), torch.from_numpy(data.y_train).cuda()
    order = torch.randperm(len(y), device="cuda")
    began = 0.0
    for step in range(steps):
        if step == 20:
            torch.cuda.synchronize()
            began = time.perf_counter()
        start = (step * BATCH) % (len(y) - BATCH)
        batch = order[start:start + BATCH]
        optimizer.zero_grad()
        loss = loss_sum("cross_entropy", model(x[batch]), y[batch]) / BATCH
        loss.backward()
        optimizer.step()
        loss.item()
    torch.cuda.synchronize()
    return (steps - 20) * BATCH / (time.perf_counter() - began)


def cnn_epoch_s(device: str, mnist: Path) -> float:
    """Seconds of one epoch of the CNN example on `device` (the job's wall time over its epoch)."""
    from elastrain.elastic import run_job
    from elastrain.spec import load_spec

    spec = load_spec(REPO / "examples" / "cnn_mnist.yaml",
                     overrides=[f"data.source=idx:{mnist}", "train.epochs=1", "resources.gpus_per_worker=1",
                                f"resources.device={device}"])
    with tempfile.TemporaryDirectory() as home:
        return run_job(spec, Path(home)).wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--mnist", type=Path, default=REPO / "datasets" / "mnist-t10k")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"bench.gpu needs a CUDA GPU, and this machine shows none (torch {torch.__version__}); "
                 "no figure was measured")
    ours, theirs = [], []
    for _ in range(args.repetitions):
        ours.append(elastrain_samples_per_s(args.steps))
        theirs.append(plain_samples_per_s(args.steps))
        print(f"elastrain {ours[-1]:.0f} samples/s, plain loop {theirs[-1]:.0f} samples/s", file=sys.stderr)
    figures = {"elastrain_samples_per_s": common.median(ours), "plain_samples_per_s": common.median(theirs),
               "ratio": common.median([a / b for a, b in zip(ours, theirs, strict=True)]),
               "model": f"mlp 256-{'-'.join(map(str, HIDDEN))}-10, adam, batch {BATCH}", "steps": args.steps,
               "repetitions": args.repetitions, "gpu": torch.cuda.get_device_name(0)}
    if (args.mnist / "t10k-images-idx3-ubyte.gz").is_file():
        gpu = [cnn_epoch_s("cuda", args.mnist) for _ in range(args.repetitions)]
        cpu = [cnn_epoch_s("cpu", args.mnist) for _ in range(args.repetitions)]
        figures |= {"cnn_epoch_s_gpu": round(statistics.mean(gpu), 3),
                    "cnn_epoch_s_cpu": round(statistics.mean(cpu), 3)}
    else:
        print(f"no MNIST at {args.mnist}: the CNN figures are left out (--mnist DIR)", file=sys.stderr)
    common.report("gpu", figures, args.save)


if __name__ == "__main__":
    main()
