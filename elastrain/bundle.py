"""What a submitted job needs from the submitter's disk, shipped to the server as one zip.

A spec can name local things: a `python:module:function` model found beside the spec file, and a
data file or folder (csv, parquet, npz, idx sources). `elastrain submit` packs them (`pack`), the
server checks and unpacks the zip once per content hash (`unpack`), and the job runs with its
paths pointing into the unpacked copy (`resolve`). Layout inside the zip: `code/` (on the
module search path) and `data/` (the data source, by its file or folder name).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from elastrain.errors import UserError
from elastrain.spec import JobSpec
from elastrain.spec.models import FILE_SOURCES

MAX_BUNDLE_BYTES = 64 * 2**20      # a submit uploads at most this much (zipped)
MAX_UNPACKED_BYTES = 512 * 2**20   # and it unpacks to at most this much
CODE, DATA = "code", "data"
SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def pack(spec: JobSpec, spec_dir: Path) -> tuple[bytes | None, JobSpec]:
    """The zip of what `spec` needs from this machine (None if nothing), and the spec to submit
    with it: its data source rewritten to the path inside the zip.

    Raises:
        UserError: the zip would exceed MAX_BUNDLE_BYTES (the message names the biggest part).
    """
    parts: list[tuple[Path, str]] = []   # (local path, name in the zip)
    module = _local_module(spec, spec_dir)
    if module is not None:
        parts.append((module, f"{CODE}/{module.name}"))
    data = spec.data
    if data.source_kind in FILE_SOURCES and Path(data.source_arg).exists():
        local = Path(data.source_arg)
        parts.append((local, f"{DATA}/{local.name}"))
        spec = spec.model_copy(deep=True)
        spec.data.source = f"{data.source_kind}:{DATA}/{local.name}"
    if not parts:
        return None, spec
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for local, name in parts:
            for path in _files(local):
                archive.write(path, str(PurePosixPath(name) / path.relative_to(local)) if local.is_dir() else name)
                if buffer.tell() > MAX_BUNDLE_BYTES:
                    raise UserError(f"what this job needs from this machine is over {MAX_BUNDLE_BYTES // 2**20} MiB "
                                    f"zipped ({local} is the part that passed it)", where="elastrain submit",
                                    fix="put the data where the server can read it (an s3:// or server-side path) "
                                        "and name that in data.source")
    return buffer.getvalue(), spec


def unpack(data: bytes, root: Path) -> str:
    """Check a submitted zip and unpack it under `root/<sha256>` (once per content); returns the hash.

    Raises:
        UserError: it is too big, not a zip, or holds an unsafe entry (an absolute path, `..`,
            a link) or more than MAX_UNPACKED_BYTES.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise UserError(f"the bundle is {len(data) / 2**20:.1f} MiB, over {MAX_BUNDLE_BYTES // 2**20} MiB",
                        where="bundle", fix="ship less: put large data where the server can read it")
    digest = hashlib.sha256(data).hexdigest()
    target = root / digest
    if target.is_dir():
        return digest
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except zipfile.BadZipFile:
        raise UserError("the bundle is not a zip file", where="bundle",
                        fix="send what `elastrain submit` packs") from None
    for entry in entries:
        path = PurePosixPath(entry.filename)
        if path.is_absolute() or ".." in path.parts or path.parts[:1] not in ((CODE,), (DATA,)) \
                or stat.S_ISLNK(entry.external_attr >> 16):
            raise UserError(f"the bundle holds an entry that may not be unpacked: {entry.filename!r}", where="bundle",
                            fix=f"entries must be relative paths under {CODE}/ or {DATA}/, without links")
    if sum(entry.file_size for entry in entries) > MAX_UNPACKED_BYTES:
        raise UserError(f"the bundle unpacks to over {MAX_UNPACKED_BYTES // 2**20} MiB", where="bundle",
                        fix="ship less: put large data where the server can read it")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpacking-"))
    try:
        archive.extractall(staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():   # not a concurrent unpacking of the same bundle that won
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return digest


def resolve(spec: JobSpec, bundle_dir: Path) -> tuple[JobSpec, list[str]]:
    """`spec` with its data source inside the unpacked bundle, and the folders to import code from."""
    data = spec.data
    if data.source_kind in FILE_SOURCES and PurePosixPath(data.source_arg).parts[:1] == (DATA,):
        spec = spec.model_copy(deep=True)
        spec.data.source = f"{data.source_kind}:{bundle_dir / data.source_arg}"
    return spec, [str(bundle_dir / CODE)]


def _local_module(spec: JobSpec, spec_dir: Path) -> Path | None:
    """The file or package of a `python:module:function` model, if it lies beside the spec."""
    if not spec.model.kind.startswith("python:"):
        return None
    top = spec.model.kind.split(":")[1].split(".")[0]
    for candidate in (spec_dir / f"{top}.py", spec_dir / top):
        if candidate.exists():
            return candidate
    return None


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not SKIPPED & set(p.relative_to(path).parts))
