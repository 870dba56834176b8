"""Optional dependencies: which of the package's extras brings each, and the one line that says
which to install when one is missing (the CLI prints it instead of an import traceback)."""

from __future__ import annotations

import importlib.util

from elastrain.errors import UserError

# The top-level module each optional dependency installs -> the extras (pyproject.toml) that bring it.
EXTRAS: dict[str, tuple[str, ...]] = {
    "prometheus_client": ("serve",),
    "optuna": ("tune",),
    "cmaes": ("tune",),
    "onnx": ("optimize",),
    "onnxscript": ("optimize",),
    "onnx_ir": ("optimize",),
    "torchao": ("optimize",),
    "torch_pruning": ("optimize",),
    "onnxruntime": ("serve", "optimize"),   # serving an optimized (ONNX) model, or making one
    "s3fs": ("s3",),
    "tokenizers": ("text",),
    "jieba": ("text",),
}


def require(*modules: str, where: str) -> None:
    """Return when the optional `modules` (keys of EXTRAS) are installed; checked before a command
    starts its work, so that it stops before printing or starting anything.

    Raises:
        UserError: the first one missing, naming the extra that brings it (exit code 1).
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise extra_error(module, EXTRAS[module], where)


def missing_extra(exc: BaseException) -> UserError | None:
    """The one-line error for `exc` when it, or an error it was raised from, is the import of an
    optional dependency that is not installed (as fsspec's "Install s3fs to access S3" is raised
    from one); None for any other error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            module = exc.name.split(".")[0]
            if module in EXTRAS:
                return extra_error(module, EXTRAS[module])
        exc = exc.__cause__ or exc.__context__
    return None


def extra_error(missing: str, extras: tuple[str, ...], where: str | None = None) -> UserError:
    """The error that says `missing` (a module, in words) is not installed and which of `extras` brings it."""
    install = " or ".join(f"pip install 'elastrain[{extra}]'" for extra in extras)
    return UserError(f"{missing} is not installed", where=where,
                     fix=f"{install} (or 'elastrain[all]' for every optional feature)", exit_code=1)
