"""Raw tables prepared before a job trains on them.

A job on a raw table (`csv:`, `parquet:`, `jsonl:`) whose data declares what only `elastrain
prepare` applies (`data.columns`: column types, missing-value policies, text; or
`data.validation_source`) trains on a folder `elastrain prepare` writes for it first, under
`ELASTRAIN_HOME/prepared/KEY`. KEY hashes the inputs (names, sizes, modification times) and every
field of the spec the preparation depends on, so a later job on the same data and declarations
reuses the folder, and a changed file or declaration prepares a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from elastrain import __version__
from elastrain.data.prepared import MANIFEST_FILE
from elastrain.data.shards import list_shards
from elastrain.spec import DataSpec, JobSpec

PREPARED_DIR = "prepared"


def needs_preparing(data: DataSpec) -> str | None:
    """Why a job on `data` must have its raw table prepared first (in words), or None."""
    from elastrain.prep.run import RAW_FORMATS

    if data.source_kind not in RAW_FORMATS:
        return None
    if data.validation_source:
        return "data.validation_source names a validation table"
    if data.columns:
        return f"data.columns declares {', '.join(sorted(data.columns))}"
    return None


def prepared_for(spec: JobSpec, home: Path, ray_session: Callable[[], AbstractContextManager],
                 phase: Callable[[str], None] | None = None) -> JobSpec:
    """`spec` itself, or, where `needs_preparing` says so, `spec` on the folder prepared for it
    (`data.source: prepared:FOLDER`), preparing it first unless an earlier job did, inside
    `ray_session()` (this process connected to Ray while in it). `phase(text)` is told when
    preparing starts.

    Raises:
        UserError: what `elastrain.prep.run.prepare` raises for the table (nothing is kept then).
    """
    import shutil

    from elastrain.prep.run import prepare

    reason = needs_preparing(spec.data)
    if reason is None:
        return spec
    folder = home / PREPARED_DIR / _key(spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # two jobs on the same data prepare it once
        if not (folder / MANIFEST_FILE).exists():
            if phase:
                phase(f"preparing the data ({reason}) into {folder}")
            try:
                with ray_session():
                    prepare(spec, folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
    prepared = spec.model_copy(deep=True)
    prepared.data.source = f"prepared:{folder}"
    prepared.data.validation_source = None
    prepared.data.columns = {}
    return prepared


def _key(spec: JobSpec) -> str:
    """16 hex digits of sha256 over the inputs' identity, the fields preparation depends on and
    elastrain's version."""
    import fsspec

    data = spec.data
    inputs = []
    for source in filter(None, (data.source, data.validation_source)):
        kind, _, pattern = source.partition(":")
        for path in list_shards(kind, pattern):
            fs, inner = fsspec.core.url_to_fs(path)
            info = fs.info(inner)
            inputs.append([path, info.get("size"), str(info.get("mtime") or info.get("LastModified") or
                                                       info.get("ETag") or "")])
    declared = {"source": data.source, "validation_source": data.validation_source, "target": data.target,
                "columns": {name: column.model_dump(mode="json") for name, column in sorted(data.columns.items())},
                "validation_fraction": data.validation_fraction,
                "split_seed": data.split_seed if data.split_seed is not None else spec.train.seed}
    text = json.dumps({"inputs": inputs, "declared": declared, "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
