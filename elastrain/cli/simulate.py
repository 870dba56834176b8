"""`elastrain simulate`: replay a workload on a simulated cluster under one or more scheduling
policies, and compare them (summary.json, plots, a table)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from elastrain.errors import UserError

POLICIES = ("fifo", "tiresias", "goodput")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def simulate(
    workload: Annotated[Path, typer.Option(
        help="The workload: a CSV of job submissions with the columns name, time, application, "
             "num_replicas and batch_size (the Pollux artifact's workloads/ folder).", show_default=False)],
    apps: Annotated[Path, typer.Option(
        help="The folder of per-application measurements, one folder per application (APP/) with "
             "placements.csv, scalability.csv and validation-BATCH.csv (the Pollux artifact's traces/).",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder to write summary.json and the plots into (created if needed).", show_default=False)],
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", "-p", metavar="POLICY",
        help="fifo (first come first served, each job at the GPUs it asked for), tiresias (two-queue "
             "least-attained-service) or goodput (workers, batch size and nodes chosen for goodput). Repeat it "
             "or separate with commas to compare several.",
        show_default="fifo,tiresias,goodput")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes in the cluster (with --spot: the most, spot and on-demand "
                                             "together).")] = 16,
    gpus_per_node: Annotated[int, typer.Option(help="GPUs on each node.")] = 4,
    round_s: Annotated[float, typer.Option(help="Seconds between scheduling decisions.")] = 60.0,
    restart_penalty_s: Annotated[float, typer.Option(
        help="Seconds a job makes no progress after its placement changes (checkpoint-restart).")] = 30.0,
    spot: Annotated[list[Path] | None, typer.Option(
        metavar="FILE",
        help="A spot availability trace: JSON with metadata.gap_seconds (seconds between ticks) and data "
             "(the nodes on offer at each tick). Repeat it to sum several zones into one spot pool. Adds a spot "
             "pool beside the on-demand pool, and goodput then rents only the nodes that pay "
             "(--nodes in all at most). A trace shorter than the simulation wraps "
             "around.", show_default=False)] = None,
    prices: Annotated[Path | None, typer.Option(
        metavar="FILE",
        help="Node prices in USD per hour: keys on_demand_per_hour and spot_per_hour (see "
             "examples/prices.yaml).", show_default="on-demand 3.06, spot 1.05")] = None,
    budget_per_hour: Annotated[float | None, typer.Option(
        help="With --spot: the most goodput may spend on nodes per hour (USD); on-demand nodes fill in for "
             "missing spot ones only within it.", show_default="no limit")] = None,
    min_speedup: Annotated[float, typer.Option(
        help="goodput rents an on-demand GPU only when it speeds some job up by at least this much (in "
             "one-GPU units); a spot GPU when it adds this times its price over the on-demand price. Higher "
             "spends less: 1.0 rents on-demand GPUs only for jobs that would otherwise not run, the setting "
             "measured in docs/benchmarks.md for spot.")] = 0.5,
    seed: Annotated[int | None, typer.Option(
        help="With --spot: start the availability traces at a point drawn from this seed, to sample other "
             "spot histories.", show_default="at their beginning")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary JSON instead of the table.")] = False,
) -> None:
    """Replay a workload on a simulated GPU cluster under each policy and compare them.

    Every --round-s seconds the policy decides which jobs run on how many GPUs; each job
    progresses as its application's measurements say it would where it is placed. Writes
    OUT/summary.json (per policy: mean, median and p99 job completion time, makespan, cost,
    unfinished jobs, every job's times) and plots: jct_cdf.png, allocation.png, nodes.png,
    cost.png. Without --spot the cluster is --nodes on-demand nodes, held throughout. With --spot
    it starts with as many spot nodes as are on offer and on-demand nodes for the rest; fifo and
    tiresias keep --nodes nodes in all, spot first, and goodput rents the GPUs worth their price
    (--min-speedup), cheapest first, within --budget-per-hour.
    Exit code 2 on bad input (nothing is written).
    """
    from elastrain.scheduler import FifoPacking, GoodputPolicy, Tiresias
    from elastrain.scheduler.nodes import FixedSize
    from elastrain.sim.apps import AppModel
    from elastrain.sim.report import nodes_change, plot, summarize
    from elastrain.sim.simulator import PoolConfig, SimConfig, Simulator
    from elastrain.sim.spot import load_availability, load_prices
    from elastrain.sim.traces import load_apps, load_workload

    for flag, value, low in (("--nodes", nodes, 1), ("--gpus-per-node", gpus_per_node, 1),
                             ("--round-s", round_s, 1e-9), ("--restart-penalty-s", restart_penalty_s, 0)):
        if value < low:
            raise UserError(f"{flag} must be {'>= 0' if low == 0 else '> 0'}, not {value}")
    if min_speedup < 0:
        raise UserError(f"--min-speedup must be >= 0, not {min_speedup}")
    chosen = _policies(policy)
    costs = load_prices(prices)
    availability = load_availability(spot) if spot else None
    if availability is not None and seed is not None:
        availability = replace(availability, start_s=random.Random(seed).uniform(0, availability.duration_s))
    try:
        submissions = load_workload(workload)
    except ValueError as exc:
        raise UserError(f"malformed workload ({exc})", where=str(workload),
                        fix="use the format name,time,application,num_replicas,batch_size") from None
    if not submissions:
        raise UserError("the workload has no jobs", where=str(workload))
    if not apps.is_dir():
        raise UserError("application traces folder not found", where=str(apps),
                        fix="point --apps at the folder holding one <app>/ folder per application")
    traces = load_apps(apps)
    unknown = sorted({s.application for s in submissions} - set(traces))
    if unknown:
        raise UserError(f"no measurements for application(s) {', '.join(unknown)}", where=str(workload),
                        fix=f"{apps} has {', '.join(sorted(traces)) or 'none'}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("not a folder", where=str(out_dir), fix="give --out a folder (it is created if needed)")

    models = {name: AppModel(traces[name]) for name in {s.application for s in submissions}}
    if availability is None:
        pools = (PoolConfig("on-demand", nodes, costs.on_demand_per_hour, initial_nodes=nodes),)
    else:
        spot_now = min(nodes, availability(0.0))
        pools = (PoolConfig("spot", nodes, costs.spot_per_hour, spot=True, initial_nodes=spot_now,
                            availability=availability),
                 PoolConfig("on-demand", nodes, costs.on_demand_per_hour, initial_nodes=nodes - spot_now))
    results = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("jobs done, {task.fields[hours]:.1f} h simulated"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        for name in chosen:
            adaptive = name == "goodput"   # only the goodput policy chooses batch sizes
            if adaptive:
                chosen_policy = GoodputPolicy(restart_penalty_s=restart_penalty_s, autoscale=availability is not None,
                                              budget_per_hour=budget_per_hour, min_speedup_per_slot=min_speedup)
            else:
                base = FifoPacking(as_requested=True) if name == "fifo" else Tiresias()
                chosen_policy = FixedSize(base, nodes)
            config = SimConfig(pools, gpus_per_node, round_s, restart_penalty_s, adaptive_batch=adaptive,
                               max_nodes=nodes)
            task = bar.add_task(name, total=len(submissions), hours=0.0)
            simulator = Simulator(submissions, models, chosen_policy, config)
            results[name] = simulator.run(
                lambda t, done, task=task: bar.update(task, completed=done, hours=t / 3600))

    summary = summarize(results, {
        "workload": str(workload), "apps": str(apps), "jobs": len(submissions), "nodes": nodes,
        "gpus_per_node": gpus_per_node, "round_s": round_s, "restart_penalty_s": restart_penalty_s,
        "prices": asdict(costs), "spot": [str(p) for p in spot] if spot else None,
        "spot_start_s": availability.start_s if availability else None, "seed": seed,
        "budget_per_hour": budget_per_hour, "min_speedup": min_speedup})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots = plot(results, out_dir)
    if as_json:
        print(json.dumps(summary))
        return
    out.print(_table(summary))
    out.print(f"wrote {out_dir / 'summary.json'} and {len(plots)} plots", soft_wrap=True)
    if not nodes_change(results):
        out.print("nodes.png and cost.png left out: no policy changed its node count (a fixed cluster; "
                  "--spot gives one that changes)", soft_wrap=True)


def _policies(given: list[str] | None) -> list[str]:
    """The policies named (repeated and comma-separated), each once, in the order given."""
    names = [n.strip().lower() for value in given or [",".join(POLICIES)] for n in value.split(",") if n.strip()]
    if not names:
        raise UserError("no policy given", fix=f"use --policy with {', '.join(POLICIES)}")
    for name in names:
        if name not in POLICIES:
            raise UserError(f"unknown policy '{name}'", fix=f"use {', '.join(POLICIES)}")
    return list(dict.fromkeys(names))


def _table(summary: dict) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"{summary['config']['jobs']} jobs of {summary['config']['workload']}")
    for column in ("policy", "mean JCT s", "median", "p99", "makespan h", "cost USD", "unfinished"):
        table.add_column(column, justify="left" if column == "policy" else "right")

    def number(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
        return "—" if value is None else f"{value / scale:,.{digits}f}"

    for name, row in summary["policies"].items():
        table.add_row(name, number(row["mean_jct_s"]), number(row["median_jct_s"]), number(row["p99_jct_s"]),
                      number(row["makespan_s"], 3600, 2), number(row["cost_usd"], digits=2), str(row["unfinished"]))
    return table
