"""What a job's run folder records about it, one typed definition each: its live status, written
by its driver and read by `elastrain status`, the server and its scheduler (`RunFolder.read_status`
/ `write_status`), and its result once it ended (`result.json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from elastrain.runs.state import JobState


@dataclass(frozen=True)
class Observation:
    """The step time measured on one configuration of the job.

    Attributes:
        nodes, workers: where it ran.
        local_batch: samples per worker per step.
        step_time: the median seconds per step over the latest steps measured there.
        steps: how many steps were measured there in all.
    """

    nodes: int
    workers: int
    local_batch: float
    step_time: float
    steps: int


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands, as its driver last wrote it.

    Attributes:
        job_id, state: the job and where it is in its life (a `JobState`; a string is taken as
            the state it names).
        workers, generation: the group's size and membership generation.
        step, epoch, total_steps: progress.
        samples_per_s: training throughput over the last second or so (None before it is known).
        read_bytes_per_s, data_wait_share: for data streamed from storage, the group's reads over
            the same window (bytes/s) and the share of the workers' time their steps waited for
            rows (0..1); None for data in memory.
        read_bytes: what the group read from storage for its steps since this driver started
            (None for data in memory).
        driver_pid: the driver's process (a job whose driver is gone is lost).
        ray_address: the Ray cluster (GCS address) where the job's driver is a named actor
            (`elastic.driver`); None for a job driven inside a local process.
        run_dir: the run folder.
        batch_size: the global batch.
        observations: step times per configuration run on (what a scheduler fits its model to).
        max_workers_seen: the most workers among the observations.
        grad_sqr, grad_var: the gradient noise at the job's batch size (None until measured on
            two or more workers).
        step_ms: the last formation's mean step: compute, all_reduce, bookkeeping, total (ms).
        message: why the job failed or how to continue it.
        updated: when this was written (epoch seconds).
    """

    job_id: str
    state: JobState
    workers: int = 0
    generation: int = 0
    step: int = 0
    epoch: int = 0
    total_steps: int = 0
    samples_per_s: float | None = None
    read_bytes_per_s: float | None = None
    data_wait_share: float | None = None
    read_bytes: float | None = None
    driver_pid: int | None = None
    ray_address: str | None = None
    run_dir: str = ""
    batch_size: int | None = None
    observations: tuple[Observation, ...] = ()
    max_workers_seen: int = 0
    grad_sqr: float | None = None
    grad_var: float | None = None
    step_ms: dict[str, float] | None = None
    message: str | None = None
    updated: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", JobState(self.state))   # JSON and the store hand it a string

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobStatus:
        """The status `to_dict` wrote (keys it does not know, from another version, are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["observations"] = tuple(Observation(**o) for o in raw.get("observations", ()))
        return cls(**values)


@dataclass
class JobResult:
    """The outcome of a job, as `elastrain run --json` prints it."""

    job_id: str
    status: JobState                 # how it ended: SUCCEEDED, FAILED or CANCELLED (a string is taken as its state)
    epochs: int                      # full epochs completed
    steps: int
    metrics: dict                    # scalar validation metrics, "val_" + name
    model_path: str | None
    wall_s: float
    run_dir: str
    message: str | None = None
    details: dict = field(default_factory=dict)   # per-class metrics and the confusion matrix
    events: int = 0                  # events recorded (see events.jsonl)
    samples_per_s: float | None = None   # training throughput from the first completed step to the last
    step_ms: dict | None = None          # the last formation's mean step: compute, all_reduce, bookkeeping, total
    data_fingerprint: str | None = None  # sha256 of the preprocessed training arrays (model lineage)
    model_bytes: int | None = None       # the saved model's size on disk (its files: metadata, preprocessing, weights)

    def __post_init__(self) -> None:
        self.status = JobState(self.status)   # result.json and the API hand it a string

    def to_dict(self) -> dict:
        """A JSON-serializable copy."""
        return asdict(self)
