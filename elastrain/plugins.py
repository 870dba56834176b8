"""Kinds of learners and data sources beyond the built-in ones, registered by name.

A plugin is a Python module that registers a learner class for a `model.kind` (see
`elastrain.train.learner.Learner`) or a data-source class for a `data.source` scheme (see
`elastrain.data.rows.DataSource`). A job spec names its plugins (`plugins: [module, ...]`); every
process that reads the spec (the CLI, the job's driver, each worker) imports them first, from the
spec's folder or anywhere on `sys.path`, so the registrations happen wherever the job runs.

    from elastrain.plugins import register_learner

    @register_learner("mean")
    class MeanLearner: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from elastrain.errors import UserError

T = TypeVar("T")

# model.kind -> the learner class that trains it (called as cls(spec, source, collective, device)).
LEARNERS: dict[str, Callable[..., Any]] = {}
# data.source scheme (the part before the colon) -> the source class (called as cls(spec)).
SOURCES: dict[str, Callable[..., Any]] = {}


def register_learner(kind: str) -> Callable[[T], T]:
    """A class decorator: the learner for jobs whose `model.kind` is `kind`.

    Raises:
        ValueError: `kind` is empty, has a colon, or is already taken by another class.
    """
    return _register(LEARNERS, kind, "model.kind")


def register_source(scheme: str) -> Callable[[T], T]:
    """A class decorator: the data source for jobs whose `data.source` is `scheme:argument`.

    Raises:
        ValueError: `scheme` is empty, has a colon, or is already taken by another class.
    """
    return _register(SOURCES, scheme, "data.source scheme")


def _register(table: dict[str, Callable[..., Any]], name: str, what: str) -> Callable[[T], T]:
    if not name or ":" in name:
        raise ValueError(f"a {what} must be a non-empty name without ':' (got {name!r})")

    def decorate(cls: T) -> T:
        known = table.get(name)
        if known is not None and _qualified(known) != _qualified(cls):
            raise ValueError(f"{what} '{name}' is already registered by {_qualified(known)}")
        table[name] = cls   # the same class imported again (a reload) replaces itself
        return cls

    return decorate


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def import_plugins(modules: Iterable[str]) -> None:
    """Import each plugin module (once per process), so that its registrations take effect.

    Raises:
        UserError: a module cannot be imported (named, with the error it raised).
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:   # whatever the plugin's import raised: one line naming it
            raise UserError(f"plugin '{name}' cannot be imported: {type(exc).__name__}: {exc}", where="plugins",
                            fix="put the module beside the spec or on PYTHONPATH, and check that it imports") from None
