"""A job's run folder, `$ELASTRAIN_HOME/runs/JOB_ID`: the one place that knows its layout.

- `spec.yaml`: the normalized spec the job runs (its data and checkpoint paths absolute).
- `data.json`: the fingerprint of the data files the job started on (`resume` checks it).
- `status.json`: its live status, replaced atomically (readers never see half a file).
- `events.jsonl`: membership changes, recoveries, checkpoints; one JSON object per line.
- `history.jsonl`: validation metrics per epoch.
- `loss.jsonl`: the training loss, per step or averaged over blocks of steps (`TrainingLoss`).
- `job.log`: what happened, for people (`elastrain logs`).
- `scale-request.json`, `cancel-request.json`: requests other processes drop for the driver.
- `checkpoints/`, `model/` (see `train.artifact`) and `result.json` (the JobResult, once it ended).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from elastrain.errors import UserError
from elastrain.runs.status import JobStatus
from elastrain.spec import JobSpec, validate_spec
from elastrain.spec.models import npy_targets

# A job id: the job's name, when it was made (UTC, to the second) and 8 random hex digits.
_JOB_ID = re.compile(r"(?P<name>.+)-\d{8}-\d{6}-[0-9a-f]{8}")
# A data file up to this size is hashed whole; a bigger one by its first and last SAMPLE_BYTES
# (with its size and mtime): resume must not read gigabytes to check that nothing changed.
WHOLE_HASH_BYTES = 64 * 2**20
SAMPLE_BYTES = 2**20


def new_job_id(name: str) -> str:
    """A unique, sortable, readable job id for a job named `name`."""
    return f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class RunFolder:
    """The run folder at `path` (its name is the job id)."""

    path: Path

    @classmethod
    def of(cls, home: Path, job_id: str) -> RunFolder:
        """Job `job_id`'s run folder under `home`, whether or not it exists yet."""
        return cls(Path(home) / "runs" / job_id)

    @classmethod
    def find(cls, home: Path, job_id: str) -> RunFolder:
        """The existing run folder of the job `job_id` names: its id, a prefix of one id only,
        or a job name (its most recent run), as `git` and `docker` take references.

        Raises:
            UserError: there is no such job, or the prefix fits several (the message names
                the most recent candidates).
        """
        folder = cls.of(home, job_id)
        if folder.spec_file.is_file():
            return folder
        runs = cls.all(home)
        named = [f for f in runs if _JOB_ID.fullmatch(f.job_id) and _JOB_ID.fullmatch(f.job_id)["name"] == job_id]
        if named:
            return named[-1]
        started = [f for f in runs if f.job_id.startswith(job_id)] if job_id else []
        if len(started) == 1:
            return started[0]
        where = str(Path(home) / "runs")
        if started:
            raise UserError(f"'{job_id}' starts {len(started)} job ids", where=where,
                            fix=f"give more of the id, e.g. one of: {', '.join(f.job_id for f in started[-5:])}")
        known = [f.job_id for f in runs]
        raise UserError(f"no job '{job_id}'", where=where,
                        fix=f"use one of: {', '.join(known[-5:])}" if known else "run a job first")

    @classmethod
    def all(cls, home: Path) -> list[RunFolder]:
        """Every job's run folder under `home`, oldest first."""
        specs = sorted(Path(home).glob("runs/*/spec.yaml"), key=lambda spec: spec.stat().st_mtime)
        return [cls(spec.parent) for spec in specs]

    @property
    def job_id(self) -> str:
        return self.path.name

    # files -----------------------------------------------------------------------------------

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def history_file(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def loss_file(self) -> Path:
        return self.path / "loss.jsonl"

    @property
    def log_file(self) -> Path:
        return self.path / "job.log"

    @property
    def curves_file(self) -> Path:
        """The picture of the job's curves (`elastrain plot`)."""
        return self.path / "curves.png"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def data_file(self) -> Path:
        return self.path / "data.json"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def _scale_request(self) -> Path:
        return self.path / "scale-request.json"

    @property
    def _cancel_request(self) -> Path:
        return self.path / "cancel-request.json"

    # reading and writing -------------------------------------------------------------------------

    def create(self, spec: JobSpec) -> None:
        """Make the folder (it must not exist), write the normalized spec into it and the fingerprint
        of its data files. Its paths should be absolute (`absolute_paths`): a relative one would be
        read against whatever folder a later `resume` runs in."""
        self.path.mkdir(parents=True)
        self.spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        files = {path: fingerprint(path) for path in data_files(spec)}
        self.data_file.write_text(json.dumps({"source": spec.data.source, "files": files}, indent=2))

    def check_data(self, spec: JobSpec) -> None:
        """Check that the job's data files are still the ones it started on (a run folder written
        before fingerprints were kept passes).

        Raises:
            UserError: a data file is gone, was added to a data folder, or changed (the line names
                the file and what changed).
        """
        recorded = _read_json(self.data_file)
        if recorded is None:
            return
        now = {path: fingerprint(path) for path in data_files(spec)}
        for path in sorted(set(recorded["files"]) | set(now)):
            change = data_change(recorded["files"].get(path), now.get(path))
            if change:
                raise UserError(f"the data changed since job {self.job_id} started: {change}", where=path,
                                fix="put back the data the job started on, or train on the new data in a new job "
                                    "(`elastrain run`)")

    def read_spec(self) -> JobSpec:
        """The spec the job runs.

        Raises:
            UserError: it is no longer a valid spec (written by an older elastrain).
        """
        return validate_spec(yaml.safe_load(self.spec_file.read_text()), str(self.spec_file))

    def read_status(self) -> JobStatus | None:
        """The live status the driver last wrote, or None before it wrote one."""
        raw = _read_json(self.status_file)
        return JobStatus.from_dict(raw) if raw is not None else None

    def write_status(self, status: JobStatus) -> None:
        _write_json_atomic(self.status_file, status.to_dict())

    def read_result(self) -> dict | None:
        """The JobResult (as a dict) of a job that ended, else None."""
        return _read_json(self.result_file)

    def write_result(self, result: dict) -> None:
        self.result_file.write_text(json.dumps(result, indent=2))

    def append_event(self, event: dict) -> None:
        """Add an event (durably: one flushed line)."""
        _append_line(self.events_file, json.dumps(event))

    def read_events(self) -> list[dict]:
        """The events recorded, oldest first (a torn last line is ignored)."""
        return list(_json_lines(self.events_file))

    def append_history(self, record: dict) -> None:
        """Add one epoch's validation metrics."""
        _append_line(self.history_file, json.dumps(record))

    def read_history(self) -> list[dict]:
        """Each epoch's validation metrics ({epoch, step, t, val_...}), oldest first."""
        return list(_json_lines(self.history_file))

    def append_loss(self, record: dict) -> None:
        """Add one training-loss point ({step, epoch, loss, steps, t})."""
        _append_line(self.loss_file, json.dumps(record))

    def read_losses(self) -> list[dict]:
        """The training-loss points recorded, oldest first."""
        return list(_json_lines(self.loss_file))

    def read_metrics(self, since: float = 0.0) -> dict[str, list[dict]]:
        """The job's metric series recorded after wall time `since`, shaped as the store's
        (`Store.metrics`): each validation metric per epoch and `train_loss` per step (or block
        of steps): {name: [{step, epoch, value, t}]}."""
        series: dict[str, list[dict]] = {}
        for record in self.read_history():
            for name, value in record.items():
                if name.startswith("val_") and record["t"] > since:
                    series.setdefault(name, []).append({"step": record["step"], "epoch": record["epoch"],
                                                        "value": value, "t": record["t"]})
        losses = [{"step": p["step"], "epoch": p["epoch"], "value": p["loss"], "t": p["t"]}
                  for p in self.read_losses() if p["t"] > since]
        return {**series, **({"train_loss": losses} if losses else {})}

    def log(self, line: str) -> None:
        """Add a timestamped line to the job's human-readable log."""
        _append_line(self.log_file, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")

    def read_log(self, offset: int = 0, limit: int | None = None) -> tuple[str, int]:
        """The job's log from byte `offset` on (at most `limit` bytes), and the offset after it."""
        if not self.log_file.is_file():
            return "", offset
        with self.log_file.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(-1 if limit is None else limit)
        return chunk.decode(errors="replace"), offset + len(chunk)

    def request_scale(self, workers: int) -> None:
        """Ask the job's driver, from another process, to run on `workers` workers."""
        _write_json_atomic(self._scale_request, {"workers": workers, "t": time.time()})

    def take_scale_request(self) -> int | None:
        """The worker count another process asked for since the last call, if any (consumed)."""
        request = _read_json(self._scale_request) if self._scale_request.exists() else None
        if request is None:
            return None
        self._scale_request.unlink(missing_ok=True)
        return int(request["workers"])

    def request_cancel(self) -> None:
        """Ask the job's driver, from another process, to cancel the job."""
        _write_json_atomic(self._cancel_request, {"t": time.time()})

    def cancel_requested(self) -> bool:
        return self._cancel_request.exists()


def absolute_paths(spec: JobSpec) -> JobSpec:
    """`spec` with a relative data file (or folder) and checkpoint folder made absolute against the
    working directory, so that the job reads and writes the same places from any other folder."""
    spec = spec.model_copy(deep=True)
    data = spec.data
    if data.on_local_disk and not os.path.isabs(data.source_arg):
        data.source = f"{data.source_kind}:{os.path.abspath(data.source_arg)}"
    if spec.checkpoint.dir and "://" not in spec.checkpoint.dir:
        spec.checkpoint.dir = os.path.abspath(spec.checkpoint.dir)
    return spec


def data_files(spec: JobSpec) -> list[str]:
    """The files a job's data comes from: its data file, each file of its data folder (IDX, or
    what `elastrain prepare` wrote) or each shard its glob matches; none for built-in and
    synthetic data, or data at a URL."""
    data = spec.data
    if not data.on_local_disk:
        return []
    if data.source_kind == "prepared":
        return sorted(str(path) for path in Path(data.source_arg).rglob("*") if path.is_file())
    if data.streamed:
        shards = sorted(glob.glob(data.source_arg))
        return sorted(shards + [npy_targets(s) for s in shards if s.endswith(".x.npy")])
    source = Path(data.source_arg)
    if source.is_dir():
        return sorted(str(path) for path in source.iterdir() if path.is_file())
    return [str(source)]


def fingerprint(path: str) -> dict | None:
    """A cheap identity of a data file: its size, mtime and sha256 (of the whole file, or of its
    head and tail when it is big: `sampled`); None when it is missing."""
    try:
        stat = os.stat(path)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            sampled = stat.st_size > WHOLE_HASH_BYTES
            if sampled:
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(-SAMPLE_BYTES, os.SEEK_END)
                digest.update(handle.read(SAMPLE_BYTES))
            else:
                for block in iter(lambda: handle.read(SAMPLE_BYTES), b""):
                    digest.update(block)
    except FileNotFoundError:
        return None
    return {"bytes": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest(), "sampled": sampled}


def data_change(before: dict | None, now: dict | None) -> str | None:
    """What changed between two fingerprints of one data file (see `fingerprint`), or None.

    A whole-file hash decides alone (a copy with a new mtime is the same data); a sampled one
    also needs the same mtime, since the middle of the file was not read."""
    if before == now:
        return None
    if now is None:
        return "the file is gone"
    if before is None:
        return "the file was added to the data folder"
    if now["bytes"] != before["bytes"]:
        return f"it has {now['bytes']} bytes, the job started on {before['bytes']}"
    if now["sha256"] != before["sha256"]:
        return "its content changed (same size, another sha256)"
    if before["sampled"] and now["mtime"] != before["mtime"]:
        return (f"it was modified at {_when(now['mtime'])}; the job started on the version of "
                f"{_when(before['mtime'])}")
    return None


def _when(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json_lines(path: Path) -> Iterator[dict]:
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def _append_line(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


def _write_json_atomic(path: Path, value: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(value))
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)   # half a file on a full disk keeps it full
        raise


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
