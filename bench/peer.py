"""Launching the DDP peer under torchrun and reading its step log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = Path(__file__).resolve().parent / "ddp_peer.py"


# Every process of one peer run carries this variable, set to the run's folder: torchrun starts
# its workers in sessions of their own and restarts them, and a restarted worker whose parent is
# gone has no link left to the run but its environment.
MARK = "ELASTRAIN_BENCH_PEER"


def launch(steps: int, run_dir: Path, torchrun_args: list[str], checkpoint_every: int = 0,
           peer_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start the peer (2 processes) under torchrun, with `peer_args` for the script; its files go to `run_dir`."""
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "--nproc-per-node=2", str(PEER),
               "--steps", str(steps), "--run-dir", str(run_dir), "--checkpoint-every", str(checkpoint_every),
               *peer_args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(run_dir / "torchrun.log").open("w"),
                            start_new_session=True, env={**os.environ, MARK: str(run_dir)})


def stop(process: subprocess.Popen, run_dir: Path) -> None:
    """Kill torchrun and every process of its run, restarted and orphaned workers included;
    return when none is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for _ in range(100):
        left = marked(run_dir)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise RuntimeError(f"processes of the peer run {run_dir} outlived SIGKILL: {marked(run_dir)}")


def marked(run_dir: Path) -> list[int]:
    """Live processes (not zombies) whose environment marks them as part of the peer run in `run_dir`."""
    mark = f"{MARK}={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:   # gone meanwhile, or not ours to read
            continue
    return found


def step_times(run_dir: Path) -> list[tuple[int, float]]:
    """(step, wall time) of every step rank 0 logged, in order."""
    path = run_dir / "steps.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            rows.append((int(parts[0]), float(parts[1])))
    return rows


def samples_per_s(rows: list[tuple[int, float]], batch: int) -> float:
    """Throughput from the first logged step to the last (startup excluded, as for elastrain)."""
    (first_step, first_t), (last_step, last_t) = rows[0], rows[-1]
    return (last_step - first_step) * batch / (last_t - first_t)


def run_dir() -> Path:
    """A fresh folder for one peer run."""
    return Path(tempfile.mkdtemp(prefix="elastrain-peer-"))
