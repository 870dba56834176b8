"""Where elastrain keeps its state on this machine."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from elastrain.errors import UserError

VERBOSE = "ELASTRAIN_VERBOSE"   # set (to 1) by `elastrain --verbose`: Ray's own messages stay on the terminal
FULL = {errno.ENOSPC, errno.EDQUOT}   # no space left, over quota
REFUSED_WRITES = {errno.EROFS, errno.EACCES, errno.EPERM, *FULL}   # what a file system answers a write it refuses
FULL_BELOW = 2**20   # a disk with less free is full for a write that failed for want of space


def home() -> Path:
    """`$ELASTRAIN_HOME`, or `~/.elastrain`: runs, models and (later) the metadata database."""
    return Path(os.environ.get("ELASTRAIN_HOME") or Path.home() / ".elastrain").expanduser()


def writable_home() -> Path:
    """:func:`home`, created if it is missing, once it has taken a file.

    Raises:
        UserError: it cannot be created or written (read-only, not yours, full); the line names it.
    """
    folder = home()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:   # named without the probe's temporary file, which the user never made
        raise not_writable(folder, OSError(exc.errno, exc.strerror)) from None
    return folder


def not_writable(folder: Path, exc: OSError) -> UserError:
    """The one line for ELASTRAIN_HOME `folder` refusing a write with `exc`."""
    reason = exc.strerror or str(exc)
    if exc.filename and Path(exc.filename) != folder:
        reason = f"{reason}: {exc.filename}"
    if exc.errno in FULL:
        fix = "free space there, or set ELASTRAIN_HOME to a folder on a disk with room"
    else:
        fix = "set ELASTRAIN_HOME to a folder you can write (it holds runs, models and the database)"
    return UserError(f"ELASTRAIN_HOME {folder} is not writable ({reason})", fix=fix)


def refused_write(exc: OSError) -> UserError | None:
    """The one line for `exc` when it is a write under :func:`home` that the file system refused
    (see REFUSED_WRITES); None for any other error, which is not the user's to fix this way."""
    if exc.errno not in REFUSED_WRITES:
        return None
    folder = home()
    if exc.filename:
        ours = Path(os.path.abspath(os.fsdecode(exc.filename))).is_relative_to(os.path.abspath(folder))
    else:   # a failed write() names no file: a full disk is ours when it is the home's disk that is full
        ours = exc.errno in FULL and _free_bytes(folder) < FULL_BELOW
    return not_writable(folder, exc) if ours else None


def _free_bytes(folder: Path) -> int:
    """Bytes free on `folder`'s file system (a large number when that cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 2**63


def ray_log() -> Path | None:
    """Where Ray's own start-up messages go (`home()/ray.log`), or None with `--verbose`."""
    return None if os.environ.get(VERBOSE) else home() / "ray.log"
