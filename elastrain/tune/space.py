"""A study's search space against its job: checking it, and sampling one trial's fields from it."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from elastrain.errors import UserError
from elastrain.spec import JobSpec, apply_overrides, validate_spec
from elastrain.spec.models import tagged_members
from elastrain.spec.tune import ParamSpec, TuneSpec

if TYPE_CHECKING:
    import optuna


def check_space(spec: JobSpec, tune: TuneSpec, where: str) -> None:
    """Refuse a search space that names a field the spec does not have, or whose every end and
    choice does not make a valid job.

    Raises:
        UserError: the first parameter at fault (exit 2): an unknown field with the nearest valid
            name, or a value the job spec refuses, with the spec's own message.
    """
    raw = spec.model_dump(mode="json", exclude={"tune"})
    for path, param in tune.space.items():
        _check_path(path, where)
        # A conditional parameter is only ever set with its conditions (e.g. model.hidden with model.kind: mlp).
        conditions = [f"{other}={_yaml(chosen)}" for other, chosen in (param.when or {}).items()]
        for value in _ends(param):
            trial = copy.deepcopy(raw)
            apply_overrides(trial, [*conditions, f"{path}={_yaml(value)}"])
            try:
                validate_spec(trial, source=where, overridden={tuple(path.split("."))})
            except UserError as exc:
                raise UserError(f"tune.space.{path}: the value {value!r} makes an invalid job ({exc.what})",
                                where=where, fix=f"change the range or choices of tune.space.{path}",
                                field=f"tune.space.{path}") from None
    if tune.sampler == "grid":
        for path, param in tune.space.items():
            if param.type == "float" and param.step is None:
                raise UserError(f"tune.space.{path}: the grid sampler needs a step for a float parameter",
                                where=where, fix=f"give tune.space.{path} a step, or make it categorical",
                                field=f"tune.space.{path}")


def _check_path(path: str, where: str) -> None:
    fields = _fields_of(JobSpec)
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if part not in fields:
            near = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.5)
            known = ".".join(parts[:depth])
            full = f"{known}.{near[0]}" if known and near else (near[0] if near else None)
            fix = f"did you mean '{full}'?" if full else \
                f"fields{' of ' + known if known else ''}: {', '.join(fields)}"
            raise UserError(f"tune.space names '{path}', which is not a field of the job spec", where=where,
                            fix=fix, field=f"tune.space.{path}")
        if depth < len(parts) - 1:
            inner = _fields_of(fields[part])
            if not inner:
                raise UserError(f"tune.space names '{path}', but '{'.'.join(parts[:depth + 1])}' has no fields",
                                where=where, fix=f"vary '{'.'.join(parts[:depth + 1])}' itself",
                                field=f"tune.space.{path}")
            fields = inner


def _fields_of(annotation: Any) -> dict[str, Any]:
    """The fields under a spec annotation, name -> annotation (`tune` left out): a section's, or
    those of every kind of the model (whether the trial's kind takes one is the trial's check)."""
    models = list(tagged_members(annotation).values()) or (
        [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else [])
    return {name: field.annotation for model in models for name, field in model.model_fields.items()
            if name != "tune"}


def _ends(param: ParamSpec) -> list[Any]:
    if param.type == "categorical":
        return list(param.choices or [])
    if param.type == "int":
        return [int(param.low), int(param.high)]
    return [param.low, param.high]


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value)   # JSON is YAML: lists and strings read back as given


def suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Sample one trial's values from `space` (Optuna's define-by-run), skipping a conditional
    parameter whose condition the trial's other choices do not meet.

    Returns:
        {spec field path: value}, in the space's order; categorical values as given (lists too).
    """
    chosen: dict[str, Any] = {}
    pending = dict(space)
    while pending:
        ready = [path for path, param in pending.items() if all(other in chosen or other not in pending
                                                                  for other in (param.when or {}))]
        if not ready:
            raise UserError("tune.space: the `when` conditions form a cycle", where="tune.space",
                            fix="make each condition depend on parameters that do not depend on it")
        for path in ready:
            param = pending.pop(path)
            if all(chosen.get(other, _MISSING) == value for other, value in (param.when or {}).items()):
                chosen[path] = _suggest_one(trial, path, param)
    return {path: chosen[path] for path in space if path in chosen}


_MISSING = object()


def _suggest_one(trial: optuna.Trial, path: str, param: ParamSpec) -> Any:
    if param.type == "float":
        return trial.suggest_float(path, param.low, param.high, log=param.log, step=param.step)
    if param.type == "int":
        return trial.suggest_int(path, int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    choices = param.choices or []
    # Optuna stores categorical choices as None, bool, int, float or str; lists go by their index.
    if all(choice is None or isinstance(choice, bool | int | float | str) for choice in choices):
        return trial.suggest_categorical(path, choices)
    return choices[trial.suggest_categorical(path, list(range(len(choices))))]


def grid_of(space: Mapping[str, ParamSpec]) -> dict[str, list[Any]]:
    """Every value of each parameter, as Optuna's grid sampler takes them (lists by index)."""
    grid: dict[str, list[Any]] = {}
    for path, param in space.items():
        if param.type == "categorical":
            choices = param.choices or []
            plain = all(c is None or isinstance(c, bool | int | float | str) for c in choices)
            grid[path] = choices if plain else list(range(len(choices)))
        else:
            count = round((param.high - param.low) / (param.step or 1)) + 1
            values = [param.low + i * (param.step or 1) for i in range(count)]
            grid[path] = [int(v) for v in values] if param.type == "int" else values
    return grid


def trial_overrides(params: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """A finished trial's stored params (Optuna's) as spec field values (list choices by value)."""
    values = {}
    for path, value in params.items():
        param = space.get(path)
        if param is not None and param.type == "categorical" and param.choices and not all(
                c is None or isinstance(c, bool | int | float | str) for c in param.choices):
            value = param.choices[int(value)]
        values[path] = value
    return values
