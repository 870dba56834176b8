"""Launching the DDP peer under torchrun and reading its step log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PEER = Path(__file__).resolve().parent / "ddp_peer.py"


def launch(steps: int, run_dir: Path, torchrun_args: list[str], checkpoint_every: int = 0) -> subprocess.Popen:
    """Start the peer (2 processes) under torchrun; its files go to `run_dir`."""
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "--nproc-per-node=2", str(PEER),
               "--steps", str(steps), "--run-dir", str(run_dir), "--checkpoint-every", str(checkpoint_every)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(run_dir / "torchrun.log").open("w"),
                            start_new_session=True)


def stop(process: subprocess.Popen, run_dir: Path | None = None) -> None:
    """Kill torchrun and every worker it started (torchrun may start workers in sessions of their
    own, so the pids they wrote to `run_dir` are killed too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pid_file in run_dir.glob("pid-*") if run_dir else []:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


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
