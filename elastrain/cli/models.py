"""`elastrain models`: the model registry. Versions with their aliases, metrics, lineage and
size; aliases (`production`, `staging`, ...) set and removed. On a server with --server (or
ELASTRAIN_SERVER), else in this machine's database (ELASTRAIN_DB_URL, or ELASTRAIN_HOME)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer
from rich.console import Console

from elastrain.cli.options import CaCertOption, ServerOption, TokenOption, remote_of

if TYPE_CHECKING:
    from elastrain.store import ModelInfo

out = Console(highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
NameArgument = Annotated[str, typer.Argument(help="The model's name (its job's name).", show_default=False)]
AliasArgument = Annotated[str, typer.Argument(help="The alias, e.g. production or staging (lowercase letters, "
                                              "digits, '-' and '_').", show_default=False)]

models_app = typer.Typer(rich_markup_mode="markdown")   # its help is the callback's docstring


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, server: ServerOption = None, token: TokenOption = None,
           ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Your registered model versions (as `elastrain models list`); `alias` and `unalias` name
    versions, which `elastrain predict NAME@ALIAS` then uses."""
    if ctx.invoked_subcommand is None:
        list_versions(server, token, ca_cert, as_json)
    elif server or as_json:   # these would otherwise be dropped silently
        from elastrain.errors import UserError

        raise UserError("--server and --json go after the subcommand", where="elastrain models",
                        fix=f"e.g. `elastrain models {ctx.invoked_subcommand} ... --server URL`")


@models_app.command("list")
def list_versions(server: ServerOption = None, token: TokenOption = None, ca_cert: CaCertOption = None,
                  as_json: JsonOption = False) -> None:
    """Your registered model versions: name, version, aliases, validation accuracy or R², the
    version each was derived from (parent), size, job and path; a server's with --server, else
    this machine's."""
    from elastrain.cli import client

    if _on_server(server):
        client.list_models(out, remote_of(server, token, ca_cert), as_json)
        return
    from elastrain.store.model_ref import local_registry

    with local_registry() as (store, owner):
        client.print_models(out, [model_dict(m) for m in store.models(owner)], as_json)


@models_app.command("alias")
def set_alias(name: NameArgument,
          version: Annotated[int, typer.Argument(help="The version the alias is to name.", min=1,
                                                 show_default=False)],
          alias: AliasArgument, server: ServerOption = None, token: TokenOption = None,
          ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Point ALIAS of model NAME at VERSION (an alias names one version: one it named before is
    let go); `elastrain predict NAME@ALIAS` then uses that version."""
    if _on_server(server):
        model = remote_of(server, token, ca_cert).call("PUT", f"/models/{quote(name, safe='')}/aliases/"
                                                               f"{quote(alias, safe='')}", json={"version": version})
    else:
        from elastrain.store.model_ref import local_registry

        with local_registry() as (store, owner):
            model = model_dict(store.set_alias(owner, name, alias, version))
    _say(as_json, model, f"{name}@{alias} is version {version}")


@models_app.command("unalias")
def remove_alias(name: NameArgument, alias: AliasArgument, server: ServerOption = None, token: TokenOption = None,
            ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Remove ALIAS of model NAME (the version it named stays registered)."""
    if _on_server(server):
        model = remote_of(server, token, ca_cert).call("DELETE", f"/models/{quote(name, safe='')}/aliases/"
                                                                  f"{quote(alias, safe='')}")
    else:
        from elastrain.errors import UserError
        from elastrain.store.model_ref import local_registry
        from elastrain.store.repository import check_alias

        with local_registry() as (store, owner):
            named = store.remove_alias(owner, name, check_alias(alias))
        if named is None:
            raise UserError(f"model '{name}' has no alias '{alias}'", where="elastrain models unalias",
                            fix="`elastrain models` lists the aliases")
        model = model_dict(named)
    _say(as_json, model, f"removed {name}@{alias} (it named version {model['version']})")


def model_dict(model: ModelInfo) -> dict:
    """A model version as the API's JSON shows it."""
    return {**asdict(model), "aliases": list(model.aliases), "created_at": model.created_at.isoformat()}


def _on_server(server: str | None) -> bool:
    """Whether the registry asked is a server's: with --server or ELASTRAIN_SERVER."""
    return bool(server or os.environ.get("ELASTRAIN_SERVER"))


def _say(as_json: bool, value: dict, line: str) -> None:
    if as_json:
        print(json.dumps(value))
    else:
        out.print(line, soft_wrap=True, markup=False)
