"""Reading the Pollux artifact's data (see the repository's `traces/README.md`): workloads of job
submissions and, per application, step-time measurements and validation runs.

Only the data formats come from there; the reading is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from elastrain.errors import UserError

# Epochs to completion per application, as the artifact sets them (a job is done after
# `max_epochs - 1` epochs of progress).
MAX_EPOCHS = {"bert": 2, "cifar10": 100, "ncf": 10, "imagenet": 90, "deepspeech2": 80, "yolov3": 50}
# Largest local (per-GPU) batch size where the artifact caps it.
MAX_LOCAL_BATCH = {"yolov3": 8}


@dataclass(frozen=True)
class Submission:
    """One job of a workload: when it arrives, what it runs, what its user asked for."""

    name: str
    time: float
    application: str
    num_replicas: int
    batch_size: int


@dataclass(frozen=True)
class AppTrace:
    """What was measured of one application.

    Attributes:
        placements: single-node runs: placement (GPUs used), local_bsz, step_time, sync_time.
        scalability: multi-node runs: num_nodes, num_replicas, local_bsz, step_time, sync_time.
        validation: global batch size -> per-epoch progress, iteration, metric, grad_sqr, grad_var.
        max_epochs: epochs to completion.
    """

    name: str
    placements: pd.DataFrame
    scalability: pd.DataFrame
    validation: dict[int, pd.DataFrame]
    max_epochs: int

    @property
    def min_batch_size(self) -> int:
        """The initial global batch size: the smallest one measured."""
        return min(self.validation)

    @property
    def max_batch_size(self) -> int:
        """The largest global batch size allowed: the largest one measured."""
        return max(self.validation)


def load_workload(path: Path) -> list[Submission]:
    """The submissions of a workload CSV (`name,time,application,num_replicas,batch_size`), by time.

    Raises:
        UserError: the file is missing or lacks a column.
    """
    frame = _read(path)
    needed = ["name", "time", "application", "num_replicas", "batch_size"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"workload lacks column(s) {', '.join(missing)}", where=str(path),
                        fix="use the format name,time,application,num_replicas,batch_size")
    submissions = [Submission(str(r.name), float(r.time), str(r.application), int(r.num_replicas),
                              int(r.batch_size)) for r in frame.itertuples(index=False)]
    return sorted(submissions, key=lambda s: (s.time, s.name))


def load_app(folder: Path) -> AppTrace:
    """One application's measurements from its folder (`traces/<app>/`).

    Raises:
        UserError: a file is missing or the application is unknown.
    """
    name = folder.name
    if name not in MAX_EPOCHS:
        raise UserError(f"unknown application '{name}'", where=str(folder),
                        fix=f"use one of {', '.join(sorted(MAX_EPOCHS))}")
    validation = {int(p.stem.split("-", 1)[1]): _read(p) for p in sorted(folder.glob("validation-*.csv"))}
    if not validation:
        raise UserError("no validation-<batch>.csv files", where=str(folder), fix="point at a traces/<app> folder")
    placements = _read(folder / "placements.csv").astype({"placement": str})
    return AppTrace(name, placements, _read(folder / "scalability.csv"), validation, MAX_EPOCHS[name])


def load_apps(traces: Path) -> dict[str, AppTrace]:
    """Every application folder under `traces` (the artifact's `traces/`)."""
    return {folder.name: load_app(folder) for folder in sorted(traces.iterdir())
            if folder.is_dir() and folder.name in MAX_EPOCHS}


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError("trace file not found", where=str(path), fix="check the --workload / --apps paths")
    return pd.read_csv(path)
