"""Naming a model: a registered one (`NAME`, `NAME:VERSION`, `NAME@ALIAS`) or a model directory
or URL; and finding the registered version a name means. This machine's registry is the jobs'
database (`database_url()`), where models belong to the OS user."""

from __future__ import annotations

import contextlib
import getpass
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elastrain.errors import UserError
from elastrain.store.db import connect
from elastrain.store.repository import MAX_VERSION, ModelInfo, ModelNotFound, Store, UserInfo, check_alias

MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")   # a job's name, which its model is registered under
FORMS = "NAME, NAME:VERSION or NAME@ALIAS (a registered model), or a model directory or URL"
SHOWN_VERSIONS = 6


@dataclass(frozen=True)
class ModelRef:
    """What a model argument names: a registered model by `name`, at a `version` or at the version
    an `alias` names or else at its latest; or a model directory or URL (`path`, the rest None)."""

    name: str | None = None
    version: int | None = None
    alias: str | None = None
    path: str | None = None


def parse_model_ref(text: str) -> ModelRef:
    """The model `text` names: a path or URL when it holds a '/' (as URLs do), starts with '.' or
    '~', or names an existing directory; otherwise `NAME`, `NAME:VERSION` or `NAME@ALIAS`.

    Raises:
        UserError: `text` is none of these forms.
    """
    if "/" in text or text.startswith((".", "~")) or (text != "" and Path(text).is_dir()):   # Path("") is "."
        return ModelRef(path=text)
    where = f"model '{text}'"
    if ":" in text and "@" in text:
        raise UserError("a model reference takes a version or an alias, not both", where=where, fix=f"use {FORMS}")
    marker = "@" if "@" in text else ":" if ":" in text else ""
    name, _, tag = text.partition(marker) if marker else (text, "", "")
    if MODEL_NAME.fullmatch(name) is None:
        raise UserError("not a model name", where=where,
                        fix=f"use {FORMS}; a name is 1-128 letters, digits, '.', '-' or '_'")
    if marker == "@":
        return ModelRef(name=name, alias=check_alias(tag, where))
    if marker == ":":
        return ModelRef(name=name, version=_version(tag, where))
    return ModelRef(name=name)


def _version(text: str, where: str) -> int:
    """The version number `text` spells (1 and up)."""
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise UserError(f"'{text}' is not a version number", where=where,
                        fix="versions are whole numbers from 1, e.g. NAME:3 (`elastrain models` lists them)")
    return int(text)


def resolve_model_ref(store: Store, viewer: UserInfo, ref: ModelRef) -> ModelInfo:
    """The registered version of `viewer`'s own model that `ref` (not a path) names.

    Raises:
        ModelNotFound: there is no such model, version or alias; the error names the versions and
            aliases there are.
    """
    if ref.path is not None:
        raise ValueError(f"{ref.path} is a path, not a registered model")
    found = store.model(viewer, ref.name, ref.version, ref.alias)
    if found is not None:
        return found
    where = f"registry {store.engine.url.render_as_string(hide_password=True)}"
    versions = [m for m in store.models(viewer, ref.name) if m.owner == viewer.name]
    if not versions:
        raise ModelNotFound(f"no model '{ref.name}' is registered", where=where,
                            fix="`elastrain models` lists the registered ones; name a model directory by a path "
                                f"(./{ref.name})")
    missing = f"version {ref.version}" if ref.version is not None else f"alias '{ref.alias}'"
    raise ModelNotFound(f"model '{ref.name}' has no {missing}", where=where, fix=_known(versions))


def _known(versions: list[ModelInfo]) -> str:
    """The versions and aliases of one model, as a sentence."""
    numbers = [str(m.version) for m in versions]
    if len(numbers) > SHOWN_VERSIONS:
        numbers = [*numbers[:2], "...", *numbers[-2:]]
    aliases = [f"{alias} (version {m.version})" for m in versions for alias in m.aliases]
    return f"its versions: {', '.join(numbers)}; its aliases: {', '.join(aliases) or 'none'}"


def local_owner(store: Store) -> UserInfo:
    """The user this machine's runs register models as: the OS user (created on first use)."""
    name = getpass.getuser()
    found = store.user(name)
    if found is not None:
        return found
    try:
        return store.create_user(name)[0]
    except UserError:
        created = store.user(name)   # by another process meanwhile; else the name itself is refused
        if created is None:
            raise
        return created


@contextlib.contextmanager
def local_registry(url: str | None = None) -> Iterator[tuple[Store, UserInfo]]:
    """This machine's registry (the database at `url`, default `database_url()`) and its owner
    here, the OS user; the connection is closed on leaving."""
    engine = connect(url)
    try:
        store = Store(engine)
        yield store, local_owner(store)
    finally:
        engine.dispose()


def locate_model(text: str, url: str | None = None) -> str:
    """Where the model `text` names lives: a path or URL as given, else the URL of the registered
    version it names in this machine's registry (see :func:`local_registry`), else the model of a
    run on this machine that a bare NAME names as `elastrain status` takes it (a job id, a unique
    prefix of one, or a job name: its latest run).

    Raises:
        UserError: `text` is malformed, or names no registered version and no run with a model.
    """
    ref = parse_model_ref(text)
    if ref.path is not None:
        return ref.path
    with local_registry(url) as (store, owner):
        try:
            return resolve_model_ref(store, owner, ref).url
        except ModelNotFound:
            if ref.version is not None or ref.alias is not None:
                raise
            run = _run_model(text)
            if run is None:
                raise
            return run


def _run_model(job: str) -> str | None:
    """The model directory of the run `job` names on this machine, if it saved one."""
    from elastrain import paths
    from elastrain.runs import RunFolder

    try:
        folder = RunFolder.find(paths.home(), job)
    except UserError:
        return None
    return str(folder.model_dir) if folder.model_dir.is_dir() else None
