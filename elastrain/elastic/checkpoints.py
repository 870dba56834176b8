"""Durable checkpoints: atomic, checksummed, asynchronous, on a local folder or any fsspec URL.

Each checkpoint is `ckpt-STEP.pt` (the state, `torch.save`d) and `ckpt-STEP.json` (its manifest:
size and sha256). Both are written to a temporary name and renamed; the manifest is renamed
last, so a checkpoint exists only once it is complete. Reading verifies size and checksum and
falls back to the previous checkpoint when the newest is broken.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
import torch

log = logging.getLogger("elastrain.checkpoints")


@dataclass
class CheckpointInfo:
    """One written checkpoint."""

    step: int
    path: str
    bytes: int
    sha256: str
    snapshot_s: float = 0.0   # serializing the state (the training loop waits for this part)
    write_s: float = 0.0      # writing it (in the background for save_async)
    meta: dict = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """The state of the newest valid checkpoint, and why newer ones were skipped."""

    state: dict
    info: CheckpointInfo
    skipped: list[str]


class CheckpointStore:
    """Checkpoints of one job under `url` (a folder path or an fsspec URL), keeping the newest `keep`."""

    def __init__(self, url: str, keep: int = 3) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.url = url
        self.keep = keep
        self.fs.makedirs(self.root, exist_ok=True)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self.pending: Future | None = None
        self.completed: list[CheckpointInfo] = []
        self.lock = threading.Lock()
        self.last_skipped: list[str] = []

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _path(self, step: int, suffix: str) -> str:
        return f"{self.root}/ckpt-{step:09d}.{suffix}"

    def save(self, step: int, state: dict, meta: dict | None = None) -> CheckpointInfo:
        """Write a checkpoint of `state` now and return what was written."""
        began = time.perf_counter()
        payload = _serialize(state)
        return self._write(step, payload, meta or {}, time.perf_counter() - began)

    def save_async(self, step: int, state: dict, meta: dict | None = None) -> None:
        """Snapshot `state` now (the caller may change it right after) and write it in the background.

        At most one write is in flight: a call made while one is writing first waits for it.

        Raises:
            Exception: the previous background write failed.
        """
        began = time.perf_counter()
        payload = _serialize(state)
        snapshot_s = time.perf_counter() - began
        self.wait()
        self.pending = self.writer.submit(self._write, step, payload, meta or {}, snapshot_s)

    def wait(self) -> None:
        """Block until background writes are done.

        Raises:
            Exception: what a background write raised.
        """
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def drain_completed(self) -> list[CheckpointInfo]:
        """The checkpoints completed since the last call."""
        with self.lock:
            done, self.completed = self.completed, []
        return done

    def close(self) -> None:
        """Finish pending writes and stop the writer thread."""
        try:
            self.wait()
        finally:
            self.writer.shutdown(wait=True)

    def _write(self, step: int, payload: bytes, meta: dict, snapshot_s: float) -> CheckpointInfo:
        began = time.perf_counter()
        data_path = self._path(step, "pt")
        info = CheckpointInfo(step, data_path, len(payload), hashlib.sha256(payload).hexdigest(), snapshot_s,
                              meta=meta)
        self._put_atomic(data_path, payload)
        manifest = {"step": step, "file": data_path.rsplit("/", 1)[-1], "bytes": info.bytes,
                    "sha256": info.sha256, "created": time.time(), "meta": meta}
        self._put_atomic(self._path(step, "json"), json.dumps(manifest).encode())
        info.write_s = time.perf_counter() - began
        self._prune()
        with self.lock:
            self.completed.append(info)
        return info

    def _put_atomic(self, path: str, payload: bytes) -> None:
        temporary = f"{path}.tmp"
        self.fs.pipe_file(temporary, payload)
        self.fs.mv(temporary, path)

    def _prune(self) -> None:
        for info in self.list()[: -self.keep]:
            for path in (info.path, self._path(info.step, "json")):
                self.fs.rm_file(path)
        for leftover in self.fs.glob(f"{self.root}/ckpt-*.tmp"):
            if self.pending is None or self.pending.done():
                self.fs.rm_file(leftover)

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a readable manifest, oldest first (checksums not verified)."""
        found = []
        for manifest_path in sorted(self.fs.glob(f"{self.root}/ckpt-*.json")):
            manifest = _read_manifest(self.fs, manifest_path)
            if manifest is not None:
                found.append(CheckpointInfo(manifest["step"], f"{self.root}/{manifest['file']}", manifest["bytes"],
                                            manifest["sha256"], meta=manifest.get("meta", {})))
        return found

    def latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that is complete and intact, or None (see `last_skipped` for why)."""
        skipped: list[str] = []
        manifests = {p.rsplit("/", 1)[-1][:-5] for p in self.fs.glob(f"{self.root}/ckpt-*.json")}
        loaded = None
        for data_path in sorted(self.fs.glob(f"{self.root}/ckpt-*.pt"), reverse=True):
            name = data_path.rsplit("/", 1)[-1]
            problem, state, info = self._verify(data_path, name[:-3] in manifests)
            if problem is None:
                loaded = LoadedCheckpoint(state, info, skipped)
                break
            skipped.append(f"checkpoint {name} is {problem}; using the previous one")
            log.warning(skipped[-1])
        self.last_skipped = skipped
        return loaded

    def _verify(self, data_path: str, has_manifest: bool) -> tuple[str | None, dict | None, CheckpointInfo | None]:
        if not has_manifest:
            return "incomplete (no manifest)", None, None
        manifest = _read_manifest(self.fs, data_path[:-3] + ".json")
        if manifest is None:
            return "incomplete (unreadable manifest)", None, None
        payload = self.fs.cat_file(data_path)
        if len(payload) != manifest["bytes"]:
            return f"corrupt (size {len(payload)} bytes, manifest says {manifest['bytes']})", None, None
        if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
            return "corrupt (sha256 mismatch)", None, None
        try:
            state = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as exc:   # an intact file that still does not load is as good as corrupt
            return f"unreadable ({type(exc).__name__})", None, None
        info = CheckpointInfo(manifest["step"], data_path, len(payload), manifest["sha256"],
                              meta=manifest.get("meta", {}))
        return None, state, info


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _read_manifest(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    try:
        manifest = json.loads(fs.cat_file(path))
        return manifest if {"step", "file", "bytes", "sha256"} <= set(manifest) else None
    except (OSError, ValueError):
        return None
