"""Running a whole job on one worker: data, trainer, loop, saved model, result record.

Layout of a run directory (`$ELASTRAIN_HOME/runs/JOB_ID`): `spec.yaml` (normalized),
`history.jsonl` (validation metrics per epoch), `model/` (see `artifact`),
`checkpoints/` and `result.json`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import torch
import yaml

from elastrain.data import prepare_dataset
from elastrain.errors import TrainingDiverged
from elastrain.spec import JobSpec
from elastrain.train.artifact import save_model
from elastrain.train.loop import fit
from elastrain.train.trainer import StepReport, Trainer


class ProgressSink(Protocol):
    """Receives a job's progress (the CLI draws it as a progress bar)."""

    def start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def step(self, report: StepReport) -> None: ...
    def epoch(self, epoch: int, metrics: dict) -> None: ...


@dataclass
class JobResult:
    """The outcome of a job, as `elastrain run --json` prints it."""

    job_id: str
    status: str                      # "succeeded" | "failed"
    epochs: int                      # full epochs completed
    steps: int
    metrics: dict                    # scalar validation metrics, "val_" + name
    model_path: str | None
    wall_s: float
    run_dir: str
    message: str | None = None
    details: dict = field(default_factory=dict)   # per-class metrics and the confusion matrix

    def to_dict(self) -> dict:
        """A JSON-serializable copy."""
        return asdict(self)


def new_job_id(name: str) -> str:
    """A unique, sortable, readable job id."""
    return f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_job(spec: JobSpec, home: Path, progress: ProgressSink | None = None) -> JobResult:
    """Train `spec` on one worker, save the model, and record the result under `home/runs`.

    Returns:
        The result; a diverging loss gives status "failed" with the last good state saved.

    Raises:
        UserError: the data or the spec cannot be used (nothing is written then).
    """
    started = time.perf_counter()
    dataset = prepare_dataset(spec)
    trainer = Trainer(spec, dataset)
    job_id = new_job_id(spec.name)
    run_dir = home / "runs" / job_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    history = (run_dir / "history.jsonl").open("a")

    def on_epoch(epoch: int, metrics: dict) -> None:
        history.write(json.dumps({"epoch": epoch, "step": trainer.step, **scalar_metrics(metrics)}) + "\n")
        history.flush()
        if progress:
            progress.epoch(epoch, metrics)

    if progress:
        progress.start(int(trainer.total_steps), trainer.steps_per_epoch)
    status, message, model_path, metrics = "succeeded", None, None, {}
    try:
        metrics = fit(trainer, on_step=progress.step if progress else None, on_epoch=on_epoch)
        model_path = str(save_model(run_dir / "model", trainer.model, spec.model, dataset.input_shape,
                                    trainer.n_outputs, dataset.task, trainer.loss_name, dataset.preprocessor))
    except TrainingDiverged as exc:
        status, message = "failed", exc.line()
        checkpoints = run_dir / "checkpoints"
        checkpoints.mkdir()
        torch.save(trainer.state_dict(), checkpoints / f"last-good-step-{trainer.step}.pt")
    finally:
        history.close()
    result = JobResult(job_id=job_id, status=status, epochs=trainer.epoch, steps=trainer.step,
                       metrics=scalar_metrics(metrics), model_path=model_path,
                       wall_s=round(time.perf_counter() - started, 3), run_dir=str(run_dir),
                       message=message, details={k: v for k, v in metrics.items() if isinstance(v, list)})
    (run_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def scalar_metrics(metrics: dict) -> dict:
    """The single-number metrics, named `val_<metric>`."""
    return {f"val_{name}": value for name, value in metrics.items() if isinstance(value, float)}
