"""Options several commands share: which server, as whom, trusting which CA."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from elastrain.client import Remote

ServerOption = Annotated[str | None, typer.Option(
    "--server", help="An elastrain server's URL, e.g. http://127.0.0.1:8080 (default: $ELASTRAIN_SERVER; "
    "from there, a job id that names a run on this machine is taken as that run).", show_default=False)]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="ELASTRAIN_TOKEN", metavar="TOKEN|@FILE", show_default=False,
    help="Your API token, or @FILE to read it from a file, which keeps it out of process listings "
         "(env ELASTRAIN_TOKEN).")]
CaCertOption = Annotated[Path | None, typer.Option(
    "--ca-cert", envvar="ELASTRAIN_CA_CERT", metavar="FILE", show_default=False,
    help="Trust an https server whose certificate this CA signed (env ELASTRAIN_CA_CERT).")]


def remote_of(server: str | None, token: str | None, ca_cert: Path | None) -> Remote:
    """The server `--server` names (else $ELASTRAIN_SERVER, else the local default), as `--token`."""
    from elastrain.client import DEFAULT_SERVER, Remote, read_token

    return Remote(server or os.environ.get("ELASTRAIN_SERVER") or DEFAULT_SERVER, read_token(token), ca_cert)
