"""Reading a job spec from YAML, applying `--set` overrides, and turning every
validation failure into one line that says what, where (file:line and field) and how to fix it."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from elastrain.errors import UserError
from elastrain.spec.limits import BoundedYamlLoader, find_excess
from elastrain.spec.models import FieldError, JobSpec, tagged_members

SHOWN_PARTS = 6   # a field path in an error names at most this many levels (a deep one goes on for 32)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override and validate the job spec in a YAML file.

    Args:
        path: the YAML file.
        overrides: `dotted.field=value` strings; values are parsed as YAML scalars.

    Returns:
        The validated spec, with relative data and checkpoint paths made relative to the
        spec file's folder.

    Raises:
        UserError: the file is missing or unreadable, not YAML, or not a valid spec.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("spec file not found", where=str(path), fix="check the path")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the spec ({exc})", where=str(path)) from None
    folder = str(path.resolve().parent)
    if folder not in sys.path:   # the spec's plugins and python: models may lie beside it
        sys.path.insert(0, folder)
    return _paths_relative_to(parse_spec(text, source=str(path), overrides=overrides), path.parent)


def _paths_relative_to(spec: JobSpec, folder: Path) -> JobSpec:
    data = spec.data
    if data.on_local_disk and not os.path.isabs(data.source_arg):
        data.source = f"{data.source_kind}:{os.path.normpath(folder / data.source_arg)}"
    kind, _, path = (data.validation_source or "").partition(":")
    if path and "://" not in path and not os.path.isabs(path):
        data.validation_source = f"{kind}:{os.path.normpath(folder / path)}"
    if spec.checkpoint.dir and "://" not in spec.checkpoint.dir and not os.path.isabs(spec.checkpoint.dir):
        spec.checkpoint.dir = os.path.normpath(folder / spec.checkpoint.dir)
    return spec


def parse_spec(text: str, source: str = "<spec>", overrides: list[str] | None = None) -> JobSpec:
    """Validate a job spec given as YAML text; see :func:`load_spec`."""
    raw, node = read_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError("a spec must be a mapping of sections (name, data, model, train, ...)",
                        where=source, fix="see examples/ for the shape of a spec")
    overridden = apply_overrides(raw, overrides or [])
    return validate_spec(raw, source=source, lines=_line_index(node), overridden=overridden)


def read_yaml(text: str | bytes, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document into plain values, refusing nesting deeper than `MAX_DEPTH` before
    it is built.

    Args:
        text: the YAML text.
        source: what the text is (a file, "request body", "--set field"), for errors.

    Returns:
        The values, and the document's node tree (for line numbers; None for an empty document).

    Raises:
        UserError: the text is not YAML, nests too deep, or holds a value Python cannot convert.
    """
    loader = BoundedYamlLoader(text, source)
    try:
        node = loader.get_single_node()
        return (None if node is None else loader.construct_document(node)), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"YAML syntax error: {problem}", where=where,
                        fix="fix the YAML at that line (indentation, colons, quotes)") from None
    except ValueError as exc:   # an integer longer than Python converts (4,300 digits)
        raise UserError(f"YAML value cannot be read ({str(exc).split(';')[0]})", where=source,
                        fix="shorten the value") from None
    finally:
        loader.dispose()


def validate_spec(raw: dict, source: str = "<spec>", lines: dict[tuple, int] | None = None,
                  overridden: set[tuple] | None = None) -> JobSpec:
    """Validate a spec given as a plain dict (as the REST API receives it).

    The spec, as given and with its defaults, must nest at most `MAX_DEPTH` levels and be at most
    `MAX_SPEC_BYTES` as JSON (it is stored as JSON); depth and size are checked before pydantic
    sees it.

    Raises:
        UserError: the spec is too deep, too big, or not valid.
    """
    lines, overridden = lines or {}, overridden or set()
    _check_bounds(raw, source, lines, overridden)
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise _user_error(exc, source, lines, overridden) from None
    _check_bounds(spec.model_dump(mode="json"), source, lines, overridden)   # the defaults add ~1 KB
    return spec


def _check_bounds(raw: Any, source: str, lines: dict[tuple, int], overridden: set[tuple]) -> None:
    excess = find_excess(raw)
    if excess is not None:
        shown = excess.loc[:SHOWN_PARTS]
        field = ".".join(map(str, shown)) + ("..." if len(excess.loc) > len(shown) else "") or "spec"
        raise UserError(f"{field}: {excess.what}", where=_place(excess.loc, source, lines, overridden),
                        fix=excess.fix, field=field)


def apply_overrides(raw: dict, overrides: list[str]) -> set[tuple]:
    """Set `dotted.path=value` entries in a raw spec dict, in place.

    Returns:
        The paths that were overridden, to name `--set` as the place of a later error.
    """
    done: set[tuple] = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"'{item}' is not a field=value pair", where="--set",
                            fix="write it like --set train.lr=0.01")
        path = tuple(key.strip().split("."))
        target = raw
        for part in path[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[path[-1]] = read_yaml(value, f"--set {key.strip()}")[0] if value.strip() else None
        done.add(path)
    return done


def _line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map every key path in a composed YAML document to its 1-based line. A node that YAML
    aliases elsewhere is walked once (where it is defined), so aliases add neither depth nor work."""
    index: dict[tuple, int] = {}
    seen: set[int] = set()

    def walk(current: yaml.Node, path: tuple) -> None:
        if id(current) in seen:
            return
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                child = (*path, key_node.value)
                index[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                index[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return index


def _user_error(exc: ValidationError, source: str, lines: dict[tuple, int],
                overridden: set[tuple]) -> UserError:
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    loc = cause.loc if isinstance(cause, FieldError) else _walk(error["loc"])[0]
    field = ".".join(str(part) for part in loc) or "spec"
    where = _place(loc, source, lines, overridden)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _walk(error["loc"][:-1])[1]
        valid = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"valid fields here: {', '.join(valid)}"
        return UserError(f"unknown field '{field}'", where=where, fix=hint, field=field)
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return UserError(f"'{field}' is required", where=where, fix="add it to the spec", field=field)
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or kind.startswith("value_error") else f" (got {got!r})"
    return UserError(f"{field}: {message}{shown}", where=where, fix=_fix_for(kind, field), field=field)


def _is_pydantic_branch(part: Any) -> bool:
    # Pydantic names union branches and validator steps inside `loc`; they are not spec fields.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _place(loc: tuple, source: str, lines: dict[tuple, int], overridden: set[tuple]) -> str:
    for depth in range(len(loc), 0, -1):
        prefix = loc[:depth]
        if prefix in overridden:
            return f"--set {'.'.join(map(str, prefix))}"
        if prefix in lines:
            return f"{source}:{lines[prefix]}"
    return source


def _walk(loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """A pydantic error location as the spec's field path, and the spec model that path ends in
    (None when it ends past a model, in a value).

    The path leaves out union branches, validator steps and the tag of a discriminated union
    (`model.mlp.hidden` is the spec's `model.hidden`); the tag picks the model that goes on.
    """
    path: list = []
    model: type[BaseModel] | None = JobSpec
    members: dict[str, type[BaseModel]] = {}
    for part in loc:
        if _is_pydantic_branch(part):
            continue
        if members:
            model, members = members.get(str(part)), {}
            continue
        path.append(part)
        field = model.model_fields.get(str(part)) if model is not None else None
        annotation = field.annotation if field is not None else None
        members = tagged_members(annotation)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return tuple(path), model


def _fix_for(kind: str, field: str) -> str | None:
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"set {field} inside the allowed range"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"give {field} a value of the right type"
    if kind == "literal_error":
        return f"set {field} to one of the listed values"
    return None
