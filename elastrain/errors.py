"""Errors a user can act on.

Every expected failure (bad spec, missing file, malformed data, diverging loss) is
raised as a :class:`UserError`; the CLI prints its one line and exits with its
code, never a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure, reported as one line: what went wrong, where, how to fix it.

    Args:
        what: what is wrong, in plain words.
        where: the place it is wrong (a file and line, a spec field, a column and row).
        fix: what the user should do about it.
        exit_code: the process exit code the CLI uses (2 for bad input).
        field: the spec field at fault, as a dotted path, when there is one (the API reports it).
    """

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None,
                 exit_code: int | None = None, field: str | None = None) -> None:
        self.what = what
        self.field = field
        self.where = where
        self.fix = fix
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self.line())

    def __reduce__(self) -> tuple:
        """Pickled whole (where, fix, exit code, field), so the error crosses to another process
        (a job's driver actor to the CLI) as it was raised."""
        return (_restore, (type(self), self.what, self.where, self.fix, self.exit_code, self.field))

    def line(self) -> str:
        """The one-line message shown to the user."""
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = f"{text} — {self.fix}"
        return " ".join(text.split())


def _restore(kind: type[UserError], what: str, where: str | None, fix: str | None, exit_code: int,
             field: str | None) -> UserError:
    return kind(what, where=where, fix=fix, exit_code=exit_code, field=field)


class JobInterrupted(Exception):
    """The job was stopped at a step boundary before its end because its driver is shutting down
    (not cancelled: it stays resumable from its checkpoints)."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the job failed and its last good state was kept."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """`Type: message` of an exception, on one line: its message's first line (errors from Ray
    and torch.distributed carry whole tracebacks)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].strip() if lines else ''}"
