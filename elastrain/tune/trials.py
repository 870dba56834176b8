"""Where a study's trials run: on Ray workers driven from the tuner's own process, or as jobs
queued on an `elastrain server`. The study's loop (`elastrain.tune.study`) is the same for both;
these say how a trial starts, who decides its size, and where its model is registered."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from elastrain.elastic.pool import WorkerPool
from elastrain.errors import UserError
from elastrain.spec import JobSpec
from elastrain.tune.allocate import RunningTrial, TrialPlan, plan_trials

if TYPE_CHECKING:
    from elastrain.client import Remote
    from elastrain.sdk import JobHandle
    from elastrain.tune.gate import OptunaPruneGate


class TrialRunner(Protocol):
    """How a study runs its trials."""

    gated: bool   # whether a trial's rank-0 worker asks the pruner itself (else the tuner does, by cancelling)

    def open(self) -> None:
        """Get ready to start trials (connect to Ray, ...)."""

    def close(self) -> None:
        """Let go of what `open` took."""

    def plan(self, running: Sequence[RunningTrial], may_start: int, now: float) -> TrialPlan:
        """Resize running trials and start up to `may_start` new ones."""

    def launch(self, spec: JobSpec, job_id: str, workers: int, gate: OptunaPruneGate) -> JobHandle:
        """Start a trial's job (`job_id` is a suggestion a server may not take: see the handle's)."""

    def workers(self, handle: JobHandle, planned: int) -> int:
        """The workers the trial holds now (`planned`: what the study last gave it); 0 while queued."""

    def abandon(self, job_id: str) -> None:
        """Stop a trial's job that a dead tuner left running, if it can still be running."""

    def model_of(self, job_id: str, spec: JobSpec) -> tuple[str | None, str | None]:
        """The best trial's model as registered, "NAME vVERSION", and where it is saved."""


class PoolTrials:
    """Trials whose controllers run in threads of this process and whose workers are Ray actors
    kept loaded between trials (`WorkerPool`); the study's own policy sizes them (`plan_trials`)
    and each trial's rank-0 worker asks the pruner after every epoch."""

    gated = True

    def __init__(self, spec: JobSpec, home: Path, code_paths: list[str], storage: str | None) -> None:
        from elastrain.scheduler.policy import FifoPacking

        self.resources = spec.resources
        self.home = home
        self.code_paths = code_paths
        self.storage = storage
        self.policy = FifoPacking()
        self.pool: WorkerPool | None = None
        self.slots = 0.0
        self._started_ray = False

    def open(self) -> None:
        import ray

        from elastrain.elastic.connect import connect_ray

        self._started_ray = connect_ray(os.environ.get("RAY_ADDRESS"))
        self.slots = ray.cluster_resources().get("GPU" if self.resources.on_gpu else "CPU", 0.0)
        self.pool = WorkerPool()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self._started_ray:
            import ray

            ray.shutdown()

    def plan(self, running: Sequence[RunningTrial], may_start: int, now: float) -> TrialPlan:
        workers = self.resources.workers
        return plan_trials(self.policy, self.slots, running, may_start, workers.min, workers.max,
                           self.per_worker, now)

    @property
    def per_worker(self) -> float:
        """Slots (CPUs, or GPUs for a GPU job) one worker takes."""
        return self.resources.gpus_per_worker if self.resources.on_gpu else self.resources.cpus_per_worker

    def launch(self, spec: JobSpec, job_id: str, workers: int, gate: OptunaPruneGate) -> JobHandle:
        from elastrain.sdk import LocalJobHandle

        return LocalJobHandle(spec, self.home, self.code_paths, workers=workers, controller_here=True,
                              job_id=job_id, pool=self.pool, gate=gate)

    def workers(self, handle: JobHandle, planned: int) -> int:
        return planned

    def abandon(self, job_id: str) -> None:
        return None   # its controller was a thread of the tuner that died

    def model_of(self, job_id: str, spec: JobSpec) -> tuple[str | None, str | None]:
        """Registers the trial's model as the next version of the job's model (owner: this OS user)."""
        from elastrain.runs import RunFolder
        from elastrain.store.model_ref import local_registry

        folder = RunFolder.of(self.home, job_id)
        result = folder.read_result()
        if not result or not result.get("model_path"):
            return None, None
        spec_hash = hashlib.sha256(json.dumps(folder.read_spec().model_dump(mode="json"), sort_keys=True)
                                   .encode()).hexdigest()
        with local_registry(self.storage) as (store, owner):
            info = store.register_model(owner, spec.name, result["model_path"], result["metrics"], spec_hash,
                                        result.get("data_fingerprint") or "")
        return f"{info.name} v{info.version}", result["model_path"]


class ServerTrials:
    """Trials submitted as jobs to an elastrain server: the server's scheduler sizes them with its
    policy (goodput-aware where the server runs one) among all its users' jobs, and the tuner
    submits the next trial only while none of its trials waits in the queue. The tuner reports
    each epoch's metric to the pruner and cancels a pruned trial's job. The server registers each
    succeeded trial's model as a version of the job's model (trials are named as the job)."""

    gated = False

    def __init__(self, remote: Remote, code_paths: list[str]) -> None:
        self.remote = remote
        self.spec_dir = Path(code_paths[0]) if code_paths else Path.cwd()
        self.bundles: dict[str, str] = {}   # a bundle's digest -> its id on the server (uploaded once)

    def open(self) -> None:
        self.remote.call("GET", "/jobs", params={"limit": 1})   # the server answers, and takes the token

    def close(self) -> None:
        return None

    def plan(self, running: Sequence[RunningTrial], may_start: int, now: float) -> TrialPlan:
        waiting = any(trial.workers == 0 for trial in running)
        return TrialPlan({}, (0,) if may_start > 0 and not waiting else ())

    def launch(self, spec: JobSpec, job_id: str, workers: int, gate: OptunaPruneGate) -> JobHandle:
        from elastrain.client import submit_job
        from elastrain.sdk import ServerJobHandle

        made = submit_job(self.remote, spec, self.spec_dir, self.bundles)
        return ServerJobHandle(self.remote, made["job_id"])

    def workers(self, handle: JobHandle, planned: int) -> int:
        return self.remote.call("GET", f"/jobs/{handle.job_id}")["workers"]

    def abandon(self, job_id: str) -> None:
        with contextlib.suppress(UserError):   # it has ended
            self.remote.call("POST", f"/jobs/{job_id}/cancel")

    def model_of(self, job_id: str, spec: JobSpec) -> tuple[str | None, str | None]:
        for model in self.remote.call("GET", "/models"):
            if model["job_id"] == job_id:
                return f"{model['name']} v{model['version']}", model["url"]
        return None, None
