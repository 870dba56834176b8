"""Durable checkpoints: atomic, checksummed, asynchronous, on a local folder or any fsspec URL.

Checkpoint STEP is `ckpt-STEP.pt` (the state, `torch.save`d; STEP zero-padded to 9 digits so names sort by
step) and `ckpt-STEP.json` (its manifest: step, file, size, sha256, created, meta). Each is written under a
temporary name in the same folder and renamed; the manifest goes last, so a checkpoint counts only once it is
complete. Reading verifies size and sha256 and falls back to the previous checkpoint when the newest is broken.
A folder has one writer at a time: pruning removes whatever is not among the newest `keep` checkpoints.

A background write that fails for want of space or permission (OSError: ENOSPC, EROFS, EACCES) removes what
it wrote and is reported, not raised: training goes on and the older checkpoints stay (see `save_async`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem

from elastrain.train.artifact import WriteFailed, failed_write

log = logging.getLogger("elastrain.checkpoints")

_NAME = re.compile(r"ckpt-(\d{9})\.(pt|json)(\.[0-9a-f]+\.tmp)?")


@dataclass
class CheckpointInfo:
    """One checkpoint: its step, data file (path, or URL for non-local storage), size and sha256."""

    step: int
    path: str
    bytes: int
    sha256: str
    snapshot_s: float = 0.0   # serializing the state (the training loop waits for this part)
    write_s: float = 0.0      # writing it (in the background for save_async)
    meta: dict = field(default_factory=dict)
    error: str | None = None  # why the write failed (one line: path, reason, bytes needed); None once written


@dataclass
class LoadedCheckpoint:
    """The state of the newest valid checkpoint, and one line per newer checkpoint skipped as broken."""

    state: dict
    info: CheckpointInfo
    skipped: list[str]


class CheckpointStore:
    """Checkpoints of one job under `url` (a folder path or an fsspec URL), keeping the newest `keep`.

    Args:
        url: local folder or fsspec URL (`file://...`, `memory://...`, `s3://...`); created if missing.
        keep: how many checkpoints to keep (at least 1).

    Raises:
        ValueError: keep < 1.
    """

    def __init__(self, url: str, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.url, self.keep = url, keep
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        with contextlib.suppress(OSError):   # a folder that cannot be made fails (and is reported) at the write
            self.fs.makedirs(self.root, exist_ok=True)
        self.last_skipped: list[str] = []   # the messages of the last latest() call, also when it returned None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future | None = None
        self._completed: list[CheckpointInfo] = []
        self._lock = threading.Lock()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, step: int, state: dict, meta: dict | None = None) -> CheckpointInfo:
        """Write a checkpoint of `state` (after any background write finished) and return it.

        Raises:
            WriteFailed: this write failed for want of space or permission (what it wrote is
                removed; the message names the path and the bytes needed).
            Exception: the previous background write failed otherwise, or this write did.
        """
        payload, snapshot_s = _serialize(state)
        self.wait()
        return self._write(step, payload, dict(meta or {}), snapshot_s)

    def save_async(self, step: int, state: dict, meta: dict | None = None) -> None:
        """Snapshot `state` now (the caller may change it right after) and write it in the background.

        At most one write is in flight: a call made while one is still writing blocks until it finishes.
        A write that fails with an OSError (a full or read-only disk, no permission) is not raised: it is
        logged and reported by `drain_completed` as a `CheckpointInfo` whose `error` says why.

        Raises:
            Exception: the previous background write failed otherwise (this snapshot is then not written).
        """
        payload, snapshot_s = _serialize(state)
        self.wait()
        future = self._writer.submit(self._write_or_report, step, payload, dict(meta or {}), snapshot_s)
        with self._lock:
            self._pending = future

    def wait(self) -> None:
        """Block until the background write is done.

        Raises:
            Exception: what the background write raised (reported once).
        """
        with self._lock:   # close() may come from another thread than the training loop's save_async()
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def drain_completed(self) -> list[CheckpointInfo]:
        """Return and forget the checkpoints (sync and async) completed since the last call, and the
        background writes that failed (their `error` set); thread-safe."""
        with self._lock:
            done, self._completed = self._completed, []
        return done

    def close(self) -> None:
        """Finish the pending write and stop the writer thread.

        Raises:
            Exception: what the background write raised.
        """
        try:
            self.wait()
        finally:
            self._writer.shutdown(wait=True)

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a readable manifest and a data file of the right size, oldest first (sha not verified)."""
        sizes = self._listing()
        found = []
        for name in sorted(n for n in sizes if n.endswith(".json") and _NAME.fullmatch(n)):
            manifest = self._manifest(name[:-5])
            if manifest is not None and sizes.get(manifest["file"]) == manifest["bytes"]:
                found.append(self._info(manifest))
        return found

    def latest(self) -> LoadedCheckpoint | None:
        """The newest complete, intact, loadable checkpoint (tensors mapped to CPU), or None if there is none.

        Newer broken checkpoints are skipped: each gets a line in `skipped` (and in `self.last_skipped`, which
        is how to see them when None is returned), logged as a warning to `elastrain.checkpoints`.
        """
        sizes = self._listing()
        steps = {int(m[1]) for m in map(_NAME.fullmatch, sizes) if m and not m[3]}
        skipped: list[str] = []
        loaded = None
        for step in sorted(steps, reverse=True):
            problem, loaded = self._load(step, sizes)
            if loaded is not None:
                break
            skipped.append(f"checkpoint ckpt-{step:09d}.pt is {problem}; using the previous one")
        if loaded is None and skipped:
            skipped[-1] = skipped[-1].replace("using the previous one", "no earlier checkpoint is intact")
        for message in skipped:
            log.warning(message)
        self.last_skipped = skipped
        return LoadedCheckpoint(loaded[0], loaded[1], skipped) if loaded else None

    def _load(self, step: int, sizes: dict[str, int]) -> tuple[str, tuple[dict, CheckpointInfo] | None]:
        stem = f"ckpt-{step:09d}"
        if f"{stem}.json" not in sizes:
            return "incomplete (no manifest)", None
        manifest = self._manifest(stem)
        if manifest is None:
            return "incomplete (unreadable manifest)", None
        try:
            payload = self.fs.cat_file(f"{self.root}/{stem}.pt")
        except OSError:   # includes a data file pruned or never renamed into place
            return "incomplete (data file missing)", None
        if len(payload) != manifest["bytes"]:
            return f"corrupt ({len(payload)} bytes, manifest says {manifest['bytes']})", None
        if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
            return "corrupt (sha256 mismatch)", None
        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:   # intact bytes that still do not load are as good as corrupt
            return f"unloadable ({type(exc).__name__})", None
        return "", (state, self._info(manifest))

    def _write_or_report(self, step: int, payload: bytes, meta: dict, snapshot_s: float) -> None:
        """`_write`, with a failure for want of space or permission logged and kept for `drain_completed`."""
        try:
            self._write(step, payload, meta, snapshot_s)
        except WriteFailed as exc:
            log.warning("%s", exc)
            failed = CheckpointInfo(step, exc.path, len(payload), "", snapshot_s, meta=meta, error=str(exc))
            with self._lock:
                self._completed.append(failed)

    def _write(self, step: int, payload: bytes, meta: dict, snapshot_s: float) -> CheckpointInfo:
        began = time.perf_counter()
        stem = f"ckpt-{step:09d}"
        manifest = {"step": step, "file": f"{stem}.pt", "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(), "created": time.time(), "meta": meta}
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self._put_atomic(f"{stem}.pt", payload)
            self._put_atomic(f"{stem}.json", json.dumps(manifest).encode())
        except OSError as exc:
            # A data file without its manifest is no checkpoint, and it holds the space a full disk lacks.
            with contextlib.suppress(OSError):
                self.fs.rm_file(f"{self.root}/{stem}.pt")
            raise failed_write(f"checkpoint of step {step}", self._shown(f"{self.root}/{stem}.pt"), len(payload),
                               exc, self._free_bytes()) from exc
        info = self._info(manifest, snapshot_s, time.perf_counter() - began)
        self._prune()
        with self._lock:
            self._completed.append(info)
        return info

    def _put_atomic(self, name: str, payload: bytes) -> None:
        # A unique temporary name: a crashed writer's leftover never collides with this write.
        temporary = f"{self.root}/{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            self.fs.pipe_file(temporary, payload)
            self.fs.mv(temporary, f"{self.root}/{name}")
        except OSError:
            with contextlib.suppress(OSError):   # a half-written file would keep a full disk full
                self.fs.rm_file(temporary)
            raise

    def _shown(self, path: str) -> str:
        """A path as the user names it: local as is, remote as a URL."""
        return path if isinstance(self.fs, LocalFileSystem) else self.fs.unstrip_protocol(path)

    def _free_bytes(self) -> int | None:
        """The free space of a local checkpoint folder's disk (None when remote or unknown)."""
        if not isinstance(self.fs, LocalFileSystem):
            return None
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def _prune(self) -> None:
        kept = {f"ckpt-{info.step:09d}.{suffix}" for info in self.list()[-self.keep:] for suffix in ("pt", "json")}
        # Everything else is an older or broken checkpoint, or a crashed write's leftover (one writer per folder).
        for name in self._listing():
            if _NAME.fullmatch(name) and name not in kept:
                self.fs.rm_file(f"{self.root}/{name}")

    def _listing(self) -> dict[str, int]:
        self.fs.invalidate_cache(self.root)   # remote filesystems cache listings; another process may have written
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:   # never made (see __init__): it holds no checkpoint
            return {}
        return {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry["size"] for entry in entries}

    def _manifest(self, stem: str) -> dict | None:
        try:
            manifest = json.loads(self.fs.cat_file(f"{self.root}/{stem}.json"))
            step = int(stem.removeprefix("ckpt-"))
            ok = manifest["step"] == step and manifest["file"] == f"{stem}.pt" and isinstance(manifest["bytes"], int)
            return manifest if ok else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _info(self, manifest: dict, snapshot_s: float = 0.0, write_s: float = 0.0) -> CheckpointInfo:
        path = self._shown(f"{self.root}/{manifest['file']}")
        return CheckpointInfo(manifest["step"], path, manifest["bytes"], manifest["sha256"], snapshot_s, write_s,
                              manifest.get("meta", {}))


def _serialize(state: dict) -> tuple[bytes, float]:
    """The state as bytes (a snapshot: later changes to its tensors do not show) and seconds taken."""
    began = time.perf_counter()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), time.perf_counter() - began
