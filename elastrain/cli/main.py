"""The `elastrain` command: a thin shell over spec, data, train."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from elastrain import paths
from elastrain.cli.federated import client as federated_client
from elastrain.cli.federated import federated_app
from elastrain.cli.models import models_app
from elastrain.cli.optimize import optimize
from elastrain.cli.options import CaCertOption, ServerOption, TokenOption, remote_of
from elastrain.cli.prepare import prepare
from elastrain.cli.serve import serve
from elastrain.cli.simulate import simulate
from elastrain.cli.tune import tune
from elastrain.errors import JobInterrupted, UserError
from elastrain.extras import missing_extra
from elastrain.runs import JobState

if TYPE_CHECKING:
    from elastrain.elastic.control import JobControl

app = typer.Typer(
    help="Train machine-learning models on elastic compute.\n\n"
         "Declare a job in YAML (see examples/), then `elastrain run job.yaml`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",   # a docstring's lines join into paragraphs (no breaks mid-sentence)
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, log_path=False)   # epoch lines: no source path


def _version(shown: bool) -> None:
    if shown:
        from elastrain import __version__

        print(f"elastrain {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False,
             verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own messages as well "
                                                   "(otherwise they go to ELASTRAIN_HOME/ray.log).")] = False) -> None:
    if verbose:
        os.environ[paths.VERBOSE] = "1"

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="FIELD=VALUE",
    help="Override a spec field, e.g. --set train.lr=0.01 (repeatable; values are YAML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


ChaosOption = Annotated[str | None, typer.Option(
    "--chaos", metavar="ACTIONS",
    help="Inject faults, actions separated by commas, e.g. kill@step=40,scale=3@step=80 (kill SIGKILLs "
         "the highest-ranked worker, kill:R the worker of rank R; scale=N resizes to N workers).")]


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="The job spec (YAML).", show_default=False)],
    overrides: SetOption = None,
    chaos: ChaosOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the job a spec declares and save the model.

    With resources.workers.max > 1 the job runs on an elastic group of Ray workers (an
    embedded Ray, or the cluster at RAY_ADDRESS); `elastrain scale` resizes it while it runs.
    Exit code 0 when the job succeeds, 1 when training fails (e.g. the loss diverged),
    2 when the spec or the data is wrong.
    """
    from elastrain.cli.progress import RichProgress
    from elastrain.elastic import RunOptions, parse_chaos
    from elastrain.elastic.control import JobControl
    from elastrain.elastic.driver import run_here
    from elastrain.runs import new_job_id
    from elastrain.spec import load_spec

    actions = parse_chaos(chaos)
    spec = load_spec(spec_file, overrides or [])
    spec_dir = str(spec_file.resolve().parent)
    sys.path.insert(0, spec_dir)   # python:module:function models beside the spec
    control, job_id = JobControl(), new_job_id(spec.name)
    with _signals_interrupt(control), RichProgress(err, spec.name, job_id) as progress:
        result = run_here(spec, paths.home(), progress,
                          RunOptions(chaos=actions, extra_paths=[spec_dir], control=control, job_id=job_id))
    _report(result, as_json)


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="The job to continue.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Continue a job whose driver died, from its newest valid durable checkpoint."""
    from elastrain.cli.progress import RichProgress
    from elastrain.elastic import RunOptions
    from elastrain.elastic.control import JobControl
    from elastrain.elastic.driver import run_here

    control = JobControl()
    with _signals_interrupt(control), RichProgress(err, job_id) as progress:
        result = run_here(None, paths.home(), progress, RunOptions(control=control, job_id=job_id))
    _report(result, as_json)


@contextlib.contextmanager
def _signals_interrupt(control: JobControl) -> Iterator[None]:
    """While training, the first SIGINT (Ctrl-C) or SIGTERM asks the job to stop after the step in
    flight (the run folder marked interrupted, exit 130); a second one interrupts at once.

    The handler only sets a flag the job's loop reads: an exception raised from a signal handler
    is lost when it lands in a finalizer (it was, once, and the run went on).
    """
    asked = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal asked
        if asked:
            raise KeyboardInterrupt
        asked = True
        control.interrupt()
        err.print("stopping after the current step (press Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


JobArgument = Annotated[str, typer.Argument(help="The job id.", show_default=False)]


def _on_server(server: str | None, job_id: str) -> bool:
    """Whether a command about `job_id` goes to a server: always with --server; with only
    ELASTRAIN_SERVER, when the id names none of this machine's runs (a local run taken although
    the variable is set is said on stderr)."""
    from elastrain.runs import RunFolder

    if server:
        return True
    exported = os.environ.get("ELASTRAIN_SERVER")
    if not exported:
        return False
    try:
        folder = RunFolder.find(paths.home(), job_id)
    except UserError:
        return True
    err.print(f"[dim]{folder.job_id}: a run on this machine (ELASTRAIN_HOME), not a job of {exported}[/dim]",
              soft_wrap=True)
    return False


@app.command()
def status(job_id: JobArgument, server: ServerOption = None, token: TokenOption = None,
           ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Show a job's workers, step, epoch, throughput and events (of a server's job with --server)."""
    from elastrain.cli import client
    from elastrain.cli.status import job_status, print_status

    if _on_server(server, job_id):
        client.show_job(out, remote_of(server, token, ca_cert), job_id, as_json)
        return
    snapshot = job_status(paths.home(), job_id)
    if as_json:
        print(json.dumps(snapshot))
    else:
        print_status(out, snapshot)


@app.command()
def scale(
    job_id: JobArgument,
    workers: Annotated[int, typer.Option("--workers", "-w", help="The number of workers to run on.",
                                         show_default=False)],
    server: ServerOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resize a running job; it takes effect at the next step boundary once new workers are up."""
    from elastrain.cli.status import request_scale

    if _on_server(server, job_id):
        job = remote_of(server, token, ca_cert).call("POST", f"/jobs/{job_id}/scale", json={"workers": workers})
        _say(as_json, job, f"asked {job_id} to run on {workers} worker(s)")
        return
    target = request_scale(paths.home(), job_id, workers)
    _say(as_json, {"job_id": job_id, "workers": target}, f"asked {job_id} to run on {target} worker(s)")


@app.command()
def submit(spec_file: Annotated[Path, typer.Argument(help="The job spec (YAML).", show_default=False)],
           overrides: SetOption = None, server: ServerOption = None, token: TokenOption = None,
           ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Queue a job on an elastrain server (the spec is checked here first, as `validate` does).

    What the job needs from this machine travels with it: a `python:module:function` model found
    beside the spec, and a local data file or folder (up to 64 MiB zipped).
    """
    from elastrain.client import submit_job
    from elastrain.spec import load_spec

    made = submit_job(remote_of(server, token, ca_cert), load_spec(spec_file, overrides or []),
                      spec_file.resolve().parent)
    _say(as_json, made, f"submitted {made['job_id']} (queued)")


@app.command()
def jobs(server: ServerOption = None, token: TokenOption = None, ca_cert: CaCertOption = None,
         state: Annotated[str | None, typer.Option("--status", help="Only jobs in this state.")] = None,
         limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
         as_json: JsonOption = False) -> None:
    """List your jobs on a server (--server), or this machine's runs, oldest first."""
    from elastrain.cli import client

    if server or os.environ.get("ELASTRAIN_SERVER"):
        client.list_jobs(out, remote_of(server, token, ca_cert), state, limit, as_json)
        return
    from elastrain.cli.status import local_jobs

    client.print_jobs(out, local_jobs(paths.home(), state, limit), as_json)


@app.command()
def logs(job_id: JobArgument, server: ServerOption = None, token: TokenOption = None,
         ca_cert: CaCertOption = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
         as_json: JsonOption = False) -> None:
    """Print a job's log (of a server's job with --server): events, epochs, warnings, errors."""
    from elastrain.cli import client

    if _on_server(server, job_id):
        client.print_logs(remote_of(server, token, ca_cert), job_id, follow, as_json)
        return
    from elastrain.cli.status import local_log_reader

    client.follow_log(job_id, *local_log_reader(paths.home(), job_id), follow, as_json)


@app.command()
def metrics(job_id: JobArgument, server: ServerOption = None, token: TokenOption = None,
            ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """A job's training loss and validation metrics per epoch (of a server's job with --server)."""
    from elastrain.cli import client

    if _on_server(server, job_id):
        client.show_metrics(out, remote_of(server, token, ca_cert), job_id, as_json)
        return
    from elastrain.cli.status import local_metrics

    client.print_metrics(out, job_id, local_metrics(paths.home(), job_id), as_json)


@app.command()
def cancel(job_id: JobArgument, server: ServerOption = None, token: TokenOption = None,
           ca_cert: CaCertOption = None, as_json: JsonOption = False) -> None:
    """Cancel a job (of a server with --server: a queued one at once); a running job stops at its
    next step boundary."""
    if not _on_server(server, job_id):
        from elastrain.cli.status import request_cancel

        request_cancel(paths.home(), job_id)
        _say(as_json, {"job_id": job_id, "status": "cancelling"}, f"{job_id}: cancelling")
        return
    job = remote_of(server, token, ca_cert).call("POST", f"/jobs/{job_id}/cancel")
    cancelled = job["status"] == JobState.CANCELLED   # a queued job is cancelled at once
    _say(as_json, job, f"{job_id}: {job['status'] if cancelled else 'cancelling'}")


app.add_typer(models_app, name="models")
app.add_typer(federated_app, name="federated")
app.command(name="client")(federated_client)


def _say(as_json: bool, value: dict, line: str) -> None:
    if as_json:
        print(json.dumps(value))
    else:
        out.print(line, soft_wrap=True)


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    policy: Annotated[str, typer.Option(
        "--policy", metavar="fifo|goodput",
        help="How jobs share the CPUs. fifo: first come, first served; queued jobs start in submission order "
             "at their minimum workers and spare CPUs top running jobs up toward their maximum. goodput: each "
             "job runs on the workers that shorten the mean job completion time most, judged from the step "
             "times it has measured and the steps it has left (a job not yet measured runs on one worker, and "
             "grows to at most twice the workers it has been measured on).")] = "fifo",
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", metavar="FILE", show_default=False,
        help="Serve HTTPS with this PEM certificate (`elastrain admin certs` makes one).")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", metavar="FILE", show_default=False, help="The certificate's private key (PEM).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Serve plain HTTP on an address other machines reach (e.g. behind a proxy that "
        "terminates TLS).")] = False,
    cpu_hour_price: Annotated[float, typer.Option(
        "--cpu-hour-price", min=0.0, metavar="USD",
        help="What one of this machine's CPUs costs per hour, for the cost figures of the dashboard and "
             "the API (0: no cost is shown).")] = 0.0,
) -> None:
    """Run the REST API (/api/v1) and the dashboard (/) over the store under ELASTRAIN_HOME (or
    ELASTRAIN_DB_URL).

    Create a user first: `elastrain admin create-user NAME --admin`. On an address other machines
    reach (--host other than 127.0.0.1, ::1 or localhost) it serves HTTPS only (--tls-cert and
    --tls-key), unless --insecure.
    """
    from elastrain.security.transport import check_listen, check_server_tls

    # Before anything starts: a refused server binds nothing and starts no Ray.
    check_server_tls(tls_cert, tls_key)
    check_listen(host, tls=tls_cert is not None, insecure=insecure)
    paths.writable_home()   # its jobs' runs and bundles live there (and by default the database)
    from elastrain.api.server import make_policy, serve

    chosen = make_policy(policy)
    scheme = "https" if tls_cert else "http"
    err.print(f"elastrain API on {scheme}://{host}:{port}/api/v1 (OpenAPI: /api/v1/openapi.json), policy {policy}; "
              f"dashboard: {scheme}://{host}:{port}/", soft_wrap=True)
    serve(host, port, policy=chosen, tls_cert=tls_cert, tls_key=tls_key, cpu_hour_price=cpu_hour_price)


admin_app = typer.Typer(help="Administer users and tokens (works on the store directly), and TLS certificates.",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="The new user's name.", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="May see every job and manage users.")] = False,
) -> None:
    """Create a user and print their API token, alone on the last line (it is shown only once)."""
    from elastrain.store import Store, connect

    user, token = Store(connect()).create_user(name, admin)
    err.print(f"created {'admin ' if user.is_admin else ''}user {user.name}; their token (keep it, it is not "
              "stored in readable form):")
    print(token)


@admin_app.command("list-users")
def list_users(as_json: JsonOption = False) -> None:
    """Every user, and whether they are an admin."""
    from elastrain.cli.tables import print_table
    from elastrain.store import Store, connect

    users = [{"name": u.name, "admin": u.is_admin} for u in Store(connect()).users()]
    if as_json:
        print(json.dumps({"users": users}))
        return
    print_table(out, ["user", "admin"], [[u["name"], "yes" if u["admin"] else ""] for u in users], keep=[0])


@admin_app.command("tokens")
def tokens(
    name: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    new: Annotated[bool, typer.Option("--new", help="Issue a further token and print it on the last line.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A user's tokens, by prefix (the tokens themselves are stored only as hashes); --new issues one."""
    from elastrain.cli.tables import print_table
    from elastrain.store import Store, connect

    store = Store(connect())
    if new:
        token = store.issue_token(name)
        err.print(f"a new token for {name} (keep it, it is not stored in readable form):")
        print(token)
        return
    if store.user(name) is None:
        raise UserError(f"no user '{name}'", where="elastrain admin tokens",
                        fix="see `elastrain admin list-users`")
    listed = [{**t, "created_at": t["created_at"].isoformat()} for t in store.tokens(name)]
    if as_json:
        print(json.dumps({"user": name, "tokens": listed}))
        return
    print_table(out, ["prefix", "created", "revoked"],
                [[t["prefix"], t["created_at"][:16].replace("T", " "), "yes" if t["revoked"] else ""]
                 for t in listed], keep=[0])


@admin_app.command("revoke")
def revoke(prefix: Annotated[str, typer.Argument(help="The token's prefix (see `admin tokens`).",
                                                 show_default=False)],
           as_json: JsonOption = False) -> None:
    """Revoke a token: requests bearing it get 401 from then on."""
    from elastrain.store import Store, connect

    if not Store(connect()).revoke_token(prefix):
        raise UserError(f"no live token starts with '{prefix}'", where="elastrain admin revoke",
                        fix="see `elastrain admin tokens NAME` for the prefixes")
    _say(as_json, {"revoked": prefix}, f"revoked token {prefix}")


@admin_app.command("certs")
def certs(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="The folder to write to.",
                                          show_default=False)],
    hosts: Annotated[list[str], typer.Option(
        "--host", metavar="HOST", show_default=False,
        help="An IP address or DNS name clients reach the server (or node) by (repeatable).")],
    name: Annotated[str, typer.Option(help="The certificate's file name: NAME.crt, NAME.key.")] = "server",
    days: Annotated[int, typer.Option(help="How many days the certificate is valid.")] = 365,
    ca_dir: Annotated[Path | None, typer.Option(
        "--ca-dir", metavar="DIR", show_default=False,
        help="Sign with the CA in this folder (its ca.crt, ca.key) instead of a new one.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a CA (ca.crt, ca.key) and a certificate it signs for the hosts (NAME.crt, NAME.key).

    The certificate serves `elastrain server --tls-cert NAME.crt --tls-key NAME.key`; clients
    trust it with `--ca-cert ca.crt` (or ELASTRAIN_CA_CERT). It also serves as a TLS client
    certificate, so the same files serve Ray's mutual TLS between nodes. Keys are written with
    mode 0600; no file is overwritten. Keep ca.key private: whoever holds it can issue
    certificates your clients trust.
    """
    from elastrain.security.certs import issue_cert

    issued = issue_cert(out_dir, hosts, name=name, days=days, ca_dir=ca_dir)
    if as_json:
        print(json.dumps({"ca_cert": str(issued.ca_cert), "cert": str(issued.cert), "key": str(issued.key),
                          "written": [str(p) for p in issued.written]}))
        return
    lines = [*(f"wrote {path}" for path in issued.written),
             f"{issued.cert}: for {', '.join(dict.fromkeys(hosts))}, valid {days} days, signed by {issued.ca_cert}",
             f"serve: elastrain server --tls-cert {issued.cert} --tls-key {issued.key}; "
             f"clients: --ca-cert {issued.ca_cert}"]
    for line in lines:
        out.print(line, soft_wrap=True, markup=False)


@app.command()
def plot(job_id: JobArgument,
         output: Annotated[Path | None, typer.Option("--out", "-o", help="The PNG to write (default: curves.png in "
                                                     "the run folder; JOB_ID.png here for a server's job).")] = None,
         server: ServerOption = None, token: TokenOption = None, ca_cert: CaCertOption = None,
         as_json: JsonOption = False) -> None:
    """Draw a job's training loss and validation metrics against the step, with its worker count
    beneath and every resize, lost worker and recovery marked, as a PNG (`elastrain run` writes
    one into the run folder at the end)."""
    from elastrain.report.curves import draw_curves

    if _on_server(server, job_id):
        remote = remote_of(server, token, ca_cert)
        series = remote.call("GET", f"/jobs/{job_id}/metrics")
        events = remote.call("GET", f"/jobs/{job_id}/events")
        target = output or Path(f"{job_id}.png")
    else:
        from elastrain.runs import RunFolder

        folder = RunFolder.find(paths.home(), job_id)
        job_id, series, events = folder.job_id, folder.read_metrics(), folder.read_events()
        target = output or folder.curves_file
    draw_curves(series, events, job_id, target)
    _say(as_json, {"job_id": job_id, "png": str(target)}, f"wrote {target}")


def _report(result, as_json: bool) -> None:
    _draw_curves(result)
    if result.status is not JobState.SUCCEEDED:
        err.print(f"[red]error:[/red] {result.message}", soft_wrap=True)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        _print_result(result)
    if result.status is not JobState.SUCCEEDED:
        raise typer.Exit(1)


def _draw_curves(result) -> None:
    """The run's curves into its run folder, as `elastrain plot` draws them."""
    from elastrain.report.curves import draw_curves
    from elastrain.runs import RunFolder

    folder = RunFolder(Path(result.run_dir))
    try:
        draw_curves(folder.read_metrics(), folder.read_events(), result.job_id, folder.curves_file)
    except OSError as exc:   # a full or read-only disk: the run's outcome matters more than its picture
        err.print(f"[yellow]warning:[/yellow] curves not drawn to {escape(str(folder.curves_file))}: "
                  f"{escape(exc.strerror or type(exc).__name__)}", soft_wrap=True)


# Rows of a tree model's feature importance table after its run.
FEATURES_SHOWN = 10


def _print_result(result) -> None:
    out.print(f"[bold]{result.job_id}[/bold] {result.status}", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("epochs / steps", f"{result.epochs} / {result.steps}")
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    out.print(table)
    gains = result.details.get("feature_gain")
    if gains:   # a tree model's: the features its splits gained most on
        from elastrain.cli.tables import print_table

        total = sum(gain for _, gain in gains) or 1.0
        shown = gains[:FEATURES_SHOWN]
        print_table(out, ["feature", "total gain", "share"],
                    [[str(name), f"{gain:.4g}", f"{gain / total:.1%}"] for name, gain in shown],
                    title=f"feature importance (gain), top {len(shown)} of {len(gains)}")
    from elastrain.cli.status import print_events
    from elastrain.runs import RunFolder

    events = RunFolder(Path(result.run_dir)).read_events()
    if any(e["kind"] not in ("start", JobState.SUCCEEDED, JobState.FAILED, "checkpoint") for e in events):
        print_events(out, events)
    if result.model_path:
        out.print(f"model saved to {result.model_path}", soft_wrap=True)
    curves = RunFolder(Path(result.run_dir)).curves_file
    if curves.is_file():   # not drawn on a full disk
        out.print(f"curves: {curves}", soft_wrap=True)


@app.command()
def validate(
    spec_file: Annotated[Path, typer.Argument(help="The job spec (YAML).", show_default=False)],
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a spec and print it normalized, with every default filled in.

    The data is checked as far as it can be without training: the file or folder exists and can
    be read, a table's header holds the target column, an .npz archive holds its keys (what was
    checked is said on stderr).
    """
    from elastrain.data.check import check_source
    from elastrain.spec import load_spec

    spec = load_spec(spec_file, overrides or [])
    err.print(check_source(spec.data), soft_wrap=True, highlight=False)
    # The shard manifest is the driver's record of what it read, not something the user writes.
    normalized = spec.model_dump(mode="json", exclude={"data": {"manifest"}})
    if as_json:
        print(json.dumps(normalized))
    else:
        out.print(yaml.safe_dump(normalized, sort_keys=False), end="", soft_wrap=True)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(
        help="A model directory (the model_path of a run), the URL of a published model (e.g. "
             "s3://bucket/models/...), or a registered model: NAME (its latest version), NAME:VERSION or "
             "NAME@ALIAS (see `elastrain models`).", show_default=False)],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Features: .csv, .parquet or .npz (key X).",
                                             show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write predictions to this CSV instead of printing.")] = None,
    proba: Annotated[bool, typer.Option("--proba", help="Add each class's probability (a classifier trained "
                                        "with cross_entropy or bce).")] = False,
    keep: Annotated[list[str] | None, typer.Option("--keep", "-k", metavar="COLUMN", help="Copy this input "
                                                   "column to the output, e.g. an id (repeatable; CSV and "
                                                   "Parquet input).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Predict with a saved model; the model's own preprocessing is applied to the input.

    A registered model is looked up in this machine's registry (ELASTRAIN_DB_URL, or
    ELASTRAIN_HOME): a path needs a '/' or a leading '.' unless it is an existing folder.
    """
    import numpy as np

    from elastrain.data import read_prediction_input
    from elastrain.data.dataset import read_kept_columns
    from elastrain.serve.model import check_features, check_scores
    from elastrain.store.model_ref import locate_model
    from elastrain.train import load_model

    saved = load_model(locate_model(model))
    with np.errstate(over="ignore"):   # a value past float32's range becomes inf: checked next
        features = read_prediction_input(input_file, saved.preprocessor)
    check_features(features, saved.preprocessor.feature_names, str(input_file))
    scores = saved.scores(features)
    check_scores(scores, features, saved.preprocessor.feature_names, str(input_file))   # no inf, NaN printed
    predicted = saved.decode_scores(scores)
    kept = read_kept_columns(input_file, saved.preprocessor, keep or [])
    header = [*kept, "prediction"]
    columns = [*kept.values(), predicted]
    probabilities = None
    if proba:
        probabilities = saved.proba_features(features)
        header += [f"proba_{label}" for label in saved.classes]
        columns += [[round(float(p), 6) for p in probabilities[:, k]] for k in range(probabilities.shape[1])]
    rows = list(zip(*columns, strict=True))
    if output:
        with output.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    if as_json:
        extra = {"classes": saved.classes, "probabilities": probabilities.round(6).tolist()} if proba else {}
        print(json.dumps({"n": len(predicted), "output": str(output) if output else None,
                          "predictions": None if output else predicted,
                          **({"kept": {k: list(v) for k, v in kept.items()}} if kept else {}),
                          **({} if output else extra)}))
    elif output:
        out.print(f"{len(predicted)} predictions written to {output}")
    elif len(header) == 1:
        print("\n".join(str(value) for value in predicted))
    else:
        print("\n".join("\t".join(str(v) for v in line) for line in [header, *rows]))


app.command()(prepare)
app.command()(simulate)
app.command()(tune)
app.command()(optimize)
app.command()(serve)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app on `argv` (default: the command line); expected errors
    become one line on stderr and the error's exit code."""
    try:
        app(args=argv, prog_name="elastrain")
    except UserError as exc:
        err.print(f"[red]error:[/red] {escape(exc.line())}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except ImportError as exc:   # an optional dependency not installed: which extra brings it, not a traceback
        missing = missing_extra(exc)
        if missing is None:
            raise
        err.print(f"[red]error:[/red] {escape(missing.line())}", soft_wrap=True)
        sys.exit(missing.exit_code)
    except OSError as exc:   # a write to ELASTRAIN_HOME refused (read-only, full): one line, not a traceback
        refused = paths.refused_write(exc)
        if refused is None:
            raise
        err.print(f"[red]error:[/red] {escape(refused.line())}", soft_wrap=True)
        sys.exit(refused.exit_code)
    except JobInterrupted as exc:
        err.print(escape(str(exc)), soft_wrap=True)
        # The run's state is on disk and its training thread has stopped; skipping the
        # interpreter's teardown avoids a C++ static destructor that aborted the process after
        # an interrupt (SIGABRT, "terminate called without an active exception"; 2 of 6 runs under load).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
