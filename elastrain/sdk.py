"""The Python API: declare a job once, train it, load the model it saved.

    import elastrain

    job = elastrain.Job.from_yaml("examples/demo.yaml", overrides={"train.epochs": 2})
    result = job.run()                        # blocks; an elastrain.JobResult
    model = elastrain.load_model(result.model_path)
    model.predict([{"a": 1.0, "b": "red"}])   # raw rows: the saved preprocessing is applied

    handle = job.start()                      # trains in the background: an elastrain.JobHandle
    handle.scale(2); handle.status().workers; handle.cancel(); handle.result()
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elastrain import paths
from elastrain.elastic import RunOptions, parse_chaos
from elastrain.elastic.control import JobControl
from elastrain.elastic.driver import run_here
from elastrain.elastic.events import Event
from elastrain.elastic.gate import EpochGate
from elastrain.elastic.pool import WorkerPool
from elastrain.errors import UserError
from elastrain.runs import JobResult, JobState, JobStatus, RunFolder, new_job_id
from elastrain.spec import JobSpec, apply_overrides, load_spec, validate_spec

if TYPE_CHECKING:
    from elastrain.client import Remote

Overrides = Mapping[str, Any] | Sequence[str] | None


class Job:
    """A training job, validated when it is made.

    Args:
        spec: the spec as a dict (the YAML's shape) or a JobSpec.
        overrides: fields to set, by dotted path: {"train.lr": 0.01} or ["train.lr=0.01"]
            (values of the string form are read as YAML, as `--set` reads them).

    Raises:
        UserError: the spec is not valid (the message names the field and how to fix it).
    """

    def __init__(self, spec: Mapping[str, Any] | JobSpec, overrides: Overrides = None) -> None:
        raw = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else copy.deepcopy(dict(spec))
        overridden = apply_overrides(raw, _override_strings(overrides))
        self.spec: JobSpec = validate_spec(raw, source="elastrain.Job", overridden=overridden)
        self.code_paths: list[str] = []   # folders a `python:module:function` model is imported from

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Overrides = None) -> Job:
        """The job a YAML spec declares; relative data paths and `python:` models are found
        beside the file, as `elastrain run` finds them.

        Raises:
            UserError: the file is missing, not YAML, or not a valid spec.
        """
        job = cls(load_spec(path, _override_strings(overrides)))
        job.code_paths = [str(Path(path).resolve().parent)]
        return job

    def run(self, chaos: str | None = None, home: str | Path | None = None) -> JobResult:
        """Train to the end from this process (under a driver actor on Ray when
        `resources.workers.max` > 1),
        save the model and record the run under `home` (default $ELASTRAIN_HOME or ~/.elastrain).

        Args:
            chaos: fault injection, as `elastrain run --chaos` takes it.

        Returns:
            The result: status (a :class:`JobState`, equal to its string) SUCCEEDED, FAILED (the
            loss diverged; the last good state is saved) or CANCELLED; `model_path` is what
            :func:`load_model` takes.

        Raises:
            UserError: the data cannot be used, or too few workers could be started.
        """
        sys.path[:0] = [p for p in self.code_paths if p not in sys.path]
        options = RunOptions(chaos=parse_chaos(chaos), extra_paths=self.code_paths)
        return run_here(self.spec, Path(home) if home else paths.home(), None, options)

    def start(self, home: str | Path | None = None) -> JobHandle:
        """Start training in a background thread of this process (on Ray workers when
        `resources.workers.max` > 1) and return its handle at once; see :meth:`run`."""
        sys.path[:0] = [p for p in self.code_paths if p not in sys.path]
        return LocalJobHandle(self.spec, Path(home) if home else paths.home(), self.code_paths)

    def submit(self, server: str | None = None, token: str | None = None,
               ca_cert: str | Path | None = None) -> JobHandle:
        """Queue the job on an elastrain server (default $ELASTRAIN_SERVER, else
        http://127.0.0.1:8080, as user $ELASTRAIN_TOKEN) with what it needs from this machine
        (see `elastrain submit`); its handle. An https server's certificate is verified against
        the CA certificate `ca_cert` (default $ELASTRAIN_CA_CERT), else the system's trusted CAs.

        Raises:
            UserError: no token, `ca_cert` unreadable, the server cannot be reached or not trusted,
                or it refuses the job.
        """
        from elastrain.client import DEFAULT_SERVER, Remote, submit_job
        from elastrain.security.transport import CA_CERT_ENV

        remote = Remote(server or os.environ.get("ELASTRAIN_SERVER") or DEFAULT_SERVER,
                        token or os.environ.get("ELASTRAIN_TOKEN"), ca_cert or os.environ.get(CA_CERT_ENV))
        made = submit_job(remote, self.spec, Path(self.code_paths[0]) if self.code_paths else Path.cwd())
        return ServerJobHandle(remote, made["job_id"])


class JobHandle(ABC):
    """A running or finished job: ask where it stands, resize or cancel it, wait for its result.
    `Job.start` gives one for a job training in this process, `Job.submit` for a job on a server."""

    job_id: str

    @abstractmethod
    def status(self) -> JobStatus:
        """Where the job stands (workers, step, samples/s, ...; state STARTING or QUEUED before it runs)."""

    @abstractmethod
    def events(self, since: float = 0.0) -> list[Event]:
        """The job's events after wall time `since` (epoch seconds), oldest first."""

    @abstractmethod
    def metrics(self, since: float = 0.0) -> dict[str, list[dict]]:
        """The job's metric series recorded after wall time `since`: each validation metric per
        epoch and `train_loss` per step (or block of steps), {name: [{step, epoch, value, t}]}."""

    @abstractmethod
    def scale(self, workers: int) -> None:
        """Ask the job to run on `workers` workers (it resizes at a step boundary, in place).

        Raises:
            UserError: `workers` is outside the job's resources.workers range, or the job has ended.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Ask the job to stop (a running one after its current step); it ends as cancelled."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: until it ends); whether the job has ended."""

    @abstractmethod
    def result(self, timeout: float | None = None) -> JobResult:
        """The job's result once it has ended, waiting up to `timeout` seconds.

        Raises:
            TimeoutError: it has not ended within `timeout`.
            UserError: the job could not run (bad data, too few workers), as Job.run raises it.
        """


class LocalJobHandle(JobHandle):
    """A job training in a background thread of this process (see :meth:`Job.start`).

    Args:
        workers: the workers it starts with (default: resources.workers.max).
        controller_here: drive its Ray workers from the background thread itself rather than from
            a driver actor (a study's trials: it saves each trial a process), and run even a job of
            one worker on Ray. Ray must be connected already.
        job_id: its id (default: a new one).
        pool: loaded workers it takes its workers from and gives them back to (with `controller_here`).
        gate: asked at each epoch's end whether the job stops there (see `EpochGate`).
    """

    def __init__(self, spec: JobSpec, home: Path, code_paths: list[str], workers: int | None = None,
                 controller_here: bool = False, job_id: str | None = None, pool: WorkerPool | None = None,
                 gate: EpochGate | None = None) -> None:
        self.spec = spec
        self.job_id = job_id or new_job_id(spec.name)
        self.folder = RunFolder.of(home, self.job_id)
        self._control = JobControl()
        self._outcome: dict[str, Any] = {}
        self._controller_here = controller_here
        options = RunOptions(extra_paths=code_paths, job_id=self.job_id, control=self._control, workers=workers,
                             on_ray=controller_here, pool=pool, gate=gate)
        self._thread = threading.Thread(target=self._train, args=(home, options), name=f"job-{self.job_id}",
                                        daemon=True)
        self._thread.start()

    def _train(self, home: Path, options: RunOptions) -> None:
        from elastrain.elastic.job import run_job

        try:
            if self._controller_here:
                self._outcome["result"] = run_job(self.spec, home, None, options)
            else:
                self._outcome["result"] = run_here(self.spec, home, None, options)
        except BaseException as exc:   # handed to the caller of result()
            self._outcome["error"] = exc

    def status(self) -> JobStatus:
        return self.folder.read_status() or JobStatus(self.job_id, JobState.STARTING)

    def events(self, since: float = 0.0) -> list[Event]:
        return [Event(**e) for e in self.folder.read_events() if e["t"] > since]

    def metrics(self, since: float = 0.0) -> dict[str, list[dict]]:
        return self.folder.read_metrics(since)

    def scale(self, workers: int) -> None:
        low, high = self.spec.resources.workers.min, self.spec.resources.workers.max
        if not low <= workers <= high:
            raise UserError(f"{workers} workers is outside this job's resources.workers range {low}..{high}",
                            where="JobHandle.scale", fix=f"choose a number from {low} to {high}")
        if not self._thread.is_alive() or self.status().state.is_final:
            raise UserError(f"job {self.job_id} has ended", where="JobHandle.scale", fix="start a new job")
        self._control.scale(workers)

    def cancel(self) -> None:
        self._control.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> JobResult:
        if not self.wait(timeout):
            raise TimeoutError(f"job {self.job_id} is still running after {timeout:g} s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


class ServerJobHandle(JobHandle):
    """A job queued on an elastrain server (see :meth:`Job.submit`), reached over its REST API."""

    POLL_S = 0.5   # how often wait() asks whether the job has ended

    def __init__(self, remote: Remote, job_id: str) -> None:
        self.remote = remote
        self.job_id = job_id

    def status(self) -> JobStatus:
        return JobStatus.from_dict(self.remote.call("GET", f"/jobs/{self.job_id}/status"))

    def events(self, since: float = 0.0) -> list[Event]:
        return [Event(**e) for e in self.remote.call("GET", f"/jobs/{self.job_id}/events", params={"since": since})]

    def metrics(self, since: float = 0.0) -> dict[str, list[dict]]:
        return self.remote.call("GET", f"/jobs/{self.job_id}/metrics", params={"since": since})

    def scale(self, workers: int) -> None:
        self.remote.call("POST", f"/jobs/{self.job_id}/scale", json={"workers": workers})

    def cancel(self) -> None:
        self.remote.call("POST", f"/jobs/{self.job_id}/cancel")

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not JobState(self.remote.call("GET", f"/jobs/{self.job_id}")["status"]).is_final:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL_S)
        return True

    def result(self, timeout: float | None = None) -> JobResult:
        if not self.wait(timeout):
            raise TimeoutError(f"job {self.job_id} is still running after {timeout:g} s")
        try:
            return JobResult(**self.remote.call("GET", f"/jobs/{self.job_id}/result"))
        except UserError:   # it ended without training (cancelled while queued, or refused by its data)
            job = self.remote.call("GET", f"/jobs/{self.job_id}")
            raise UserError(f"job {self.job_id} {job['status']} without a result: {job['message']}",
                            where=self.remote.server, fix=f"see `elastrain logs {self.job_id}`", exit_code=1) from None


def _override_strings(overrides: Overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):   # JSON is YAML: the values read back as given
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)
