"""What every benchmark shares: the workload, the machine description, medians, the JSON report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# The workload both sides train: an MLP 64-1024-512-10 on scikit-learn's digits, Adam,
# global batch 64 (the demo's model).
HIDDEN = (1024, 512)
BATCH = 64
LR = 0.001


def elastrain_spec(workers: int, max_steps: int, every_steps: int | None = None, min_workers: int | None = None):
    """The benchmark workload as an elastrain job spec."""
    from elastrain.spec import validate_spec

    return validate_spec({
        "name": "bench",
        "data": {"source": "builtin:digits"},
        "model": {"kind": "mlp", "hidden": list(HIDDEN)},
        "train": {"optimizer": "adam", "lr": LR, "batch_size": BATCH, "max_steps": max_steps, "seed": 0},
        "resources": {"workers": {"min": min_workers or workers, "max": workers}, "cpus_per_worker": 0.5},
        "checkpoint": {"every_steps": every_steps},
    }, "bench")


def machine() -> dict:
    """Cores, versions and platform of this run."""
    import ray
    import torch

    return {"cores": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def median(values: list[float]) -> float:
    """The median, rounded for reports."""
    return round(statistics.median(values), 4)


def arguments(description: str, steps: int, repetitions: int = 3) -> argparse.Namespace:
    """Common options: --repetitions, --steps, --save (also write bench/results/NAME.json)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=repetitions, help="interleaved runs of each side")
    parser.add_argument("--steps", type=int, default=steps, help="training steps of each run")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    return parser.parse_args()


def report(name: str, figures: dict, save: bool) -> None:
    """Print the figures (with the machine) as the last line; with `save`, write them to bench/results."""
    figures = {"benchmark": name, **figures, "machine": machine()}
    line = json.dumps(figures)
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(line + "\n")
    sys.stdout.flush()
    print(line)


class PeakMemory(threading.Thread):
    """The peak resident memory (MB, VmHWM) of each process started under process `root` whose
    command line starts with `prefix` (default: elastrain's `ray::Worker` processes of the job's
    own Ray, not another Ray instance's); with `prefix=None`, of `root` and every process below it."""

    def __init__(self, root: int, prefix: bytes | None = b"ray::Worker") -> None:
        super().__init__(daemon=True)
        self.root = root
        self.prefix = prefix
        self.peaks: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            for pid in descendants(self.root) | ({self.root} if self.prefix is None else set()):
                entry = Path("/proc") / str(pid)
                try:
                    if self.prefix is not None and not (entry / "cmdline").read_bytes().startswith(self.prefix):
                        continue
                    for line in (entry / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peaks[pid] = int(line.split()[1]) / 1024
                except OSError:
                    continue   # the process ended while we looked

    def peak_mb(self) -> float:
        """The largest peak of one process seen (MB, to 0.1)."""
        return round(max(self.peaks.values(), default=0.0), 1)


def run_measured(argv: list[str], env: dict, timeout: float, prefix: bytes | None = None,
                 cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """`argv` run to its end (text output captured) while `PeakMemory` watches it and, as
    `prefix` says, the processes below it: the completed process, and the largest peak RSS of
    one of them (MB)."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid, prefix)
    memory.start()
    stdout, stderr = process.communicate(timeout=timeout)
    memory.stopping.set()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr), memory.peak_mb()


def descendants(root: int) -> set[int]:
    """The processes below `root` in the process tree, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = set(), [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def start_ray() -> None:
    """One embedded Ray for all of a benchmark's runs, started as `elastrain run` starts it."""
    from elastrain.elastic.connect import connect_ray

    connect_ray(None)


def raytrain_replica() -> tuple:
    """The workload inside a Ray Train worker: (x (N, 64) float32 standardized digits, y (N,)
    int64, the bare model, the model to train (DDP from 2 workers on), its Adam optimizer, the step
    it holds, this worker's rank, the world size), resumed from Ray Train's latest checkpoint (the
    state.pt that :func:`raytrain_report` writes) if there is one."""
    import itertools

    import numpy as np
    import ray.train
    import torch
    from ray.train.torch import prepare_model
    from sklearn.datasets import load_digits
    from torch import nn

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = torch.from_numpy((x - x.mean()) / x.std())
    y = torch.from_numpy(digits.target.astype(np.int64))
    torch.manual_seed(0)
    sizes = [64, *HIDDEN]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    context = ray.train.get_context()
    return x, y, net, prepare_model(net), optimizer, step, context.get_world_rank(), context.get_world_size()


def raytrain_report(metrics: dict, net, optimizer, step: int, rank: int) -> None:
    """Report `metrics` to Ray Train from every rank, rank 0 with a checkpoint of the model and
    optimizer at `step` (every rank must report, or the others wait)."""
    import tempfile

    import ray.train
    import torch

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                   Path(folder) / "state.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def raytrain_step(model, optimizer, x, y, order, step: int, rank: int, world: int):
    """Train step `step` + 1 of a Ray Train worker: its share of the global batch that `step`
    takes from the epoch order `order` (a permutation of the samples), one Adam update; the loss."""
    from torch import nn

    per_rank = BATCH // world
    start = (step * BATCH) % (len(y) - BATCH)
    mine = order[start + rank * per_rank: start + (rank + 1) * per_rank]
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[mine]), y[mine])
    loss.backward()
    optimizer.step()
    return loss


class TotalMemory(threading.Thread):
    """The peak of the memory that process `root` and every process below it hold together (MB):
    the sum of their proportional set sizes (PSS: a page shared by n processes counts 1/n to
    each, so shared memory such as Ray's object store counts once), sampled every `every_s`."""

    def __init__(self, root: int, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.peak = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            total = 0
            for pid in descendants(self.root) | {self.root}:
                try:
                    for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                            break
                except OSError:
                    continue   # the process ended while we looked
            self.peak = max(self.peak, total / 1024)

    def peak_mb(self) -> float:
        """The largest total seen (MB, to 0.1)."""
        return round(self.peak, 1)
