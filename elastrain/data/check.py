"""What can be checked of a job's data without training: the file or folder exists and can be
read; shards match the glob and share one schema that holds the target (from their metadata
only); a table reads as training reads it (the same reader, so `validate` and `run` cannot
disagree), holds the target column, and its values pass training's checks; an .npz archive
holds its two keys.

Standard library only at import, so that `elastrain validate` stays fast: pandas is loaded
only when the source is a table.
"""

from __future__ import annotations

import difflib
import zipfile
from pathlib import Path

from elastrain.errors import UserError
from elastrain.plugins import SOURCES
from elastrain.spec import DataSpec


def check_source(data: DataSpec) -> str:
    """Check `data.source` as far as it can be without loading it.

    Returns:
        One line saying what was checked, then a line per warning ("warning: ...").

    Raises:
        UserError: the file or folder is missing or unreadable, or its header or keys lack what
            the spec names.
    """
    kind, arg = data.source_kind, data.source_arg
    if kind in SOURCES:
        return f"data: '{data.source}', read by the plugin {SOURCES[kind].__module__} while training"
    if kind in ("builtin", "synthetic"):
        return f"data: {kind} '{arg}' (nothing to read before training)"
    if data.streamed:
        from elastrain.data.streaming import describe_shards

        return describe_shards(data)
    path = Path(arg)
    if kind == "idx":
        if not path.is_dir() or not any("images-idx3-ubyte" in p.name for p in path.iterdir()):
            raise UserError("no folder of *images-idx3-ubyte[.gz] files here", where=str(path),
                            fix="point data.source at a folder holding MNIST-style IDX files")
        return f"data: IDX folder {path} found"
    if not path.is_file():
        raise UserError("data file not found", where=str(path),
                        fix="check data.source (relative paths are resolved against the spec file's folder)")
    if kind == "npz":
        names = {name.removesuffix(".npy") for name in _archive_names(path)}
        missing = [key for key in data.npz_keys if key not in names]
        if missing:
            raise UserError(f"the archive has no array {', '.join(repr(k) for k in missing)} "
                            f"(arrays: {', '.join(sorted(names))})", where=str(path),
                            fix="set data.npz_keys to [features key, target key]")
        return f"data: {path} holds arrays {data.npz_keys[0]!r} and {data.npz_keys[1]!r}"
    from elastrain.data.dataset import check_table
    from elastrain.data.sources import read_source

    raw = read_source(data, seed=0)
    warnings = check_table(raw, data)
    said = f"data: {path} has {raw.frame.shape[1] + 1} columns, the target '{data.target}' among them"
    return "\n".join([said, *(f"warning: {message}" for message in warnings)])


def missing_target(target: str, columns: list[str], path: Path, how: str) -> UserError:
    """The error for a table without the target column `target` (`how`: how a CSV was read)."""
    close = difflib.get_close_matches(target, columns, n=1, cutoff=0.3)
    if len(columns) == 1 and how:
        hint = "the header was read as one column: set data.csv.sep to the file's separator"
    else:
        hint = f"set data.target to '{close[0]}'" if close else "set data.target to the label column"
    return UserError(f"no target column '{target}' (columns: {', '.join(columns[:20])}){how}", where=str(path),
                     fix=hint)


def _archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"cannot read the .npz file: {exc}", where=str(path),
                        fix="give a file written by numpy.savez") from None
