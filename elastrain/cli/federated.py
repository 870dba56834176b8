"""`elastrain federated`: federated training (rounds over clients that keep their data)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from elastrain.cli.options import CaCertOption, ServerOption, TokenOption, remote_of
from elastrain.errors import UserError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

federated_app = typer.Typer(help="Federated training: rounds over clients that keep their data.",
                            no_args_is_help=True)


@federated_app.command()
def simulate(
    spec_file: Annotated[Path, typer.Argument(help="The job spec (YAML) with its `federated:` section.",
                                              show_default=False)],
    clients: Annotated[int, typer.Option("--clients", min=1, help="Simulated clients the training rows are "
                                         "split over.")] = 10,
    partition: Annotated[str, typer.Option("--partition", metavar="SPLIT",
                                           help="How the rows are split: dirichlet:ALPHA (each client's label mix "
                                                "drawn from Dirichlet(ALPHA); small ALPHA, few classes each) or "
                                                "iid.")] = "dirichlet:0.5",
    min_rows: Annotated[int, typer.Option("--min-rows", min=1, help="Training rows every client holds at "
                                          "least.")] = 10,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, metavar="N", show_default=False,
        help="Processes on the local Ray that train the clients in turns (default: this machine's cores); 0 trains "
             "them one after another in this process.")] = None,
    drop: Annotated[float, typer.Option(
        "--drop", min=0.0, max=1.0, metavar="SHARE",
        help="Inject dropouts: this share of each round's clients has its process SIGKILLed halfway through its local "
             "training (needs --workers of 1 or more).")] = 0.0,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="FIELD=VALUE", help="Override a spec field, e.g. --set federated.rounds=30.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Simulate a federation on this machine: the job's training rows split over `--clients`
    clients, and `federated.rounds` rounds in which `federated.clients_per_round` of them, drawn by
    the job's seed, train the global model on their own rows (the job's model, optimizer and
    trainer; `local_epochs` in batches of `local_batch_size`) and the server aggregates their
    updates by `federated.strategy` and evaluates the global model on the validation split.

    The clients train in turns on a pool of `--workers` processes, so memory does not grow with
    their number; a client whose process dies is dropped from its round, one still training at
    `federated.round_deadline_s` is cut, and the round goes on with those that reported (at least
    `federated.min_clients`, or the global model stays as it was). The same spec, clients and
    split give the same rounds. Exit code 2 when the spec has no `federated:` section or the split
    cannot be drawn.
    """
    from elastrain.data.dataset import prepare_dataset
    from elastrain.federated.partition import parse_partition
    from elastrain.federated.partition import partition as split_rows
    from elastrain.federated.simulate import simulate as run_rounds
    from elastrain.spec import load_spec

    spec = load_spec(spec_file, overrides or [])
    federated = spec.federated
    if federated is None:
        raise UserError(f"{spec_file} has no federated: section", where=str(spec_file),
                        fix="add one, e.g. federated: {rounds: 30, clients_per_round: 10, local_epochs: 1}")
    kind, alpha = parse_partition(partition)
    if spec.data.streamed:
        raise UserError("a simulated federation splits rows held in memory, not shards streamed from storage",
                        where="data.source", fix="name one file, or a data set of elastrain's own")
    data = prepare_dataset(spec)
    if kind == "dirichlet" and data.task != "classification":
        raise UserError("a Dirichlet split draws each client's mix of classes; this job's target is a quantity",
                        where="--partition", fix="use --partition iid")
    parts = split_rows(data.y_train, clients, kind, alpha, spec.train.seed, min_rows)
    workers = min(os.cpu_count() or 1, federated.clients_in_round(clients)) if workers is None else workers
    if drop and not workers:
        raise UserError("--drop kills clients' processes; with --workers 0 they train in this process",
                        where="--drop", fix="give --workers 1 or more")
    metric = "accuracy" if data.task == "classification" else "mse"
    bar = Progress(TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task("rounds", total=federated.rounds, last="")
    with bar, _client_pool(spec, data, parts, workers, drop) as pool:
        _, records = run_rounds(spec, federated, data, parts, clients=pool, on_round=lambda record: bar.update(
            task, completed=record.round, last=f"val {metric} {record.metrics[metric]:.4f}"))
    table = Table(box=box.SIMPLE_HEAD, title=f"{spec.name}: {federated.strategy}, {clients} clients ({partition})")
    private = federated.privacy is not None
    for column in ("round", "asked", "reported", "dropped", "late", f"val {metric}", "s", "update KB",
                   *(("ε",) * private)):
        table.add_column(column, justify="right")
    for record in records:
        table.add_row(str(record.round), *(str(len(c)) for c in (record.asked, record.reported, record.dropped,
                                                                  record.late)),
                      f"{record.metrics[metric]:.4f}" + ("" if record.aggregated else " (kept)"),
                      f"{record.seconds:.2f}", f"{record.update_bytes / 1e3:,.0f}",
                      *([f"{record.epsilon:.3g}"] if private else []))
    err.print(table)
    final = records[-1].metrics
    summary = {"rounds": len(records), "clients": clients, "partition": partition, "strategy": federated.strategy,
               "workers": workers, f"val_{metric}": [round(r.metrics[metric], 6) for r in records],
               "reported": [len(r.reported) for r in records], "dropped": [len(r.dropped) for r in records],
               "late": [len(r.late) for r in records], "aggregated": [r.aggregated for r in records],
               "round_s": [round(r.seconds, 4) for r in records], "update_bytes": [r.update_bytes for r in records],
               "secure_aggregation": federated.secure_aggregation,
               "final": {f"val_{k}": v for k, v in final.items() if isinstance(v, int | float)},
               "wall_s": round(sum(r.seconds for r in records), 3),
               "epsilon": records[-1].epsilon, "delta": federated.privacy.delta if private else None}
    spent = f", client-level privacy ({records[-1].epsilon:.3g}, {federated.privacy.delta:g})" if private else ""
    if as_json:
        out.print(json.dumps(summary), soft_wrap=True, markup=False)
    else:
        out.print(f"after {len(records)} rounds: val {metric} {final[metric]:.4f} "
                  f"({summary['wall_s']:.1f} s of rounds){spent}")


@contextlib.contextmanager
def _client_pool(spec, data, parts, workers: int, drop: float) -> Iterator:
    """A pool of `workers` client processes on Ray (connected meanwhile), or None to train the
    clients in this process when `workers` is 0."""
    if not workers:
        yield None
        return
    from elastrain.elastic.connect import ray_session
    from elastrain.federated.pool import ClientPool

    with ray_session():
        pool = ClientPool(spec, spec.federated, data, parts, workers, drop)
        try:
            yield pool
        finally:
            pool.close()


def client(
    job_id: Annotated[str, typer.Argument(help="The federated job's id (`elastrain jobs` lists it).",
                                          show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="This client's rows: a table with exactly the job's columns "
                                       "(features and target), in the job's format.", show_default=False)],
    server: ServerOption = None, token: TokenOption = None, ca_cert: CaCertOption = None,
    wait_s: Annotated[float, typer.Option("--wait", min=0, help="Seconds to keep trying to join a job that is "
                                          "queued or starting.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Take part in a federated job on an elastrain server: join it, train each round this client
    is asked to on the rows of --data (with the job's model, optimizer and preprocessing), and
    send only the update; until the job ends.

    The rows never leave this machine. Use HTTPS (the server's --tls-cert) so that the updates
    travel encrypted. Exit code 1 when the job cannot be joined, 2 when --data does not fit it.
    """
    from elastrain.federated.remote import FederatedClient

    def said(round_: int, rows: int, seconds: float) -> None:
        err.print(f"round {round_}: trained on {rows} rows in {seconds:.2f} s, update sent")

    runner = FederatedClient(remote_of(server, token, ca_cert), job_id, data, wait_s, on_round=said,
                             on_wait=lambda reason: err.print(f"waiting to join: {reason}"))
    reported = runner.run()
    summary = {"job_id": job_id, "client_id": runner.client_id, "rounds_reported": reported}
    if as_json:
        out.print(json.dumps(summary), soft_wrap=True, markup=False)
    else:
        out.print(f"job {job_id} ended; this client reported {reported} round(s)")
