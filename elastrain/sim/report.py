"""What a simulation run reports: a summary per policy (job completion times, makespan, cost) and
plots comparing the policies, drawn with matplotlib's Agg backend (files only, no display)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from elastrain.sim.simulator import SimResult

PLOTS = ("jct_cdf.png", "allocation.png", "nodes.png", "cost.png")   # nodes and cost: see `plot`


def policy_summary(result: SimResult) -> dict:
    """Mean, median and p99 job completion time of the finished jobs (None when none finished),
    makespan (seconds from the start to the last finish; None while a job is unfinished),
    cost in USD, the number of unfinished jobs, the per-job list and the timeline (`t`, `gpus_used`,
    `nodes` per pool, `cost_usd` so far, at each round where the allocation changed; what the
    dashboard charts)."""
    done = np.array([j["jct_s"] for j in result.jobs if j["jct_s"] is not None], dtype=float)
    finishes = [j["finish_s"] for j in result.jobs if j["finish_s"] is not None]
    jct = dict.fromkeys(("mean_jct_s", "median_jct_s", "p99_jct_s"))
    if done.size:
        jct = {"mean_jct_s": float(done.mean()), "median_jct_s": float(np.median(done)),
               "p99_jct_s": float(np.percentile(done, 99))}
    return {
        **jct,
        "makespan_s": max(finishes) if finishes and not result.unfinished else None,
        "cost_usd": result.cost,
        "unfinished": result.unfinished,
        "jobs": result.jobs,
        "timeline": [{"t": row["t"], "gpus_used": row["gpus_used"], "nodes": row["nodes"], "cost_usd": row["cost"]}
                     for row in _changes(result.timeline)],
    }


def _changes(timeline: list[dict]) -> list[dict]:
    """The rounds where the GPUs in use or the nodes held changed, and the first and last rounds:
    between two of them the allocation is constant and the cost grows linearly, so a step chart
    and a line through them draw the whole timeline."""
    return [row for i, row in enumerate(timeline)
            if i in (0, len(timeline) - 1)
            or (row["gpus_used"], row["nodes"]) != (timeline[i - 1]["gpus_used"], timeline[i - 1]["nodes"])]


def summarize(results: Mapping[str, SimResult], config: dict) -> dict:
    """The JSON-ready summary of a run: the `config` it ran with and, per policy (in the order
    given), `policy_summary`."""
    return {"config": config, "policies": {name: policy_summary(r) for name, r in results.items()}}


def plot(results: Mapping[str, SimResult], folder: Path) -> list[Path]:
    """Write the comparison plots (of `PLOTS`) into `folder` (which must exist); their paths.

    jct_cdf.png: fraction of all jobs finished within a completion time (a curve that stays
    below 1 has unfinished jobs); allocation.png: GPUs in use over time, one panel per policy on
    one time axis; nodes.png: nodes held over time (dashed: the spot ones, when there is a spot
    pool); cost.png: cumulative cost. The last two only when some policy's node count changes:
    on a fixed cluster they would be a flat line and one cost line per policy, all alike.
    """
    written = [_save(folder / "jct_cdf.png", _jct_cdf, results)]
    figure = Figure(figsize=(7, 1.2 + 1.6 * len(results)), layout="constrained")
    panels = figure.subplots(len(results), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    for axes, (name, result) in zip(panels, results.items(), strict=True):
        axes.step(_hours(result), [row["gpus_used"] for row in result.timeline], where="post")
        axes.set_ylabel(f"{name}\nGPUs in use")
        axes.grid(True, alpha=0.3)
    panels[0].set_title("Allocation")
    panels[-1].set_xlabel("time (h)")
    FigureCanvasAgg(figure).print_png(folder / "allocation.png")
    written.append(folder / "allocation.png")
    if nodes_change(results):
        written += [_save(folder / "nodes.png", _nodes, results), _save(folder / "cost.png", _cost, results)]
    return written


def nodes_change(results: Mapping[str, SimResult]) -> bool:
    """Whether any policy's run held different numbers of nodes over time."""
    return any(len({tuple(sorted(row["nodes"].items())) for row in result.timeline}) > 1
               for result in results.values())


def _save(path: Path, draw, results: Mapping[str, SimResult]) -> Path:
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    draw(axes, results)
    axes.grid(True, alpha=0.3)
    axes.legend()
    FigureCanvasAgg(figure).print_png(path)
    return path


def _jct_cdf(axes, results: Mapping[str, SimResult]) -> None:
    for name, result in results.items():
        done = np.sort([j["jct_s"] for j in result.jobs if j["jct_s"] is not None])
        fraction = np.arange(1, done.size + 1) / max(len(result.jobs), 1)
        axes.step(done, fraction, where="post", label=name)
    axes.set_xscale("log")
    axes.set(xlabel="job completion time (s)", ylabel="fraction of jobs finished", ylim=(0, 1.02),
             title="Job completion time")


def _hours(result: SimResult) -> np.ndarray:
    return np.array([row["t"] for row in result.timeline]) / 3600


def _nodes(axes, results: Mapping[str, SimResult]) -> None:
    for name, result in results.items():
        hours = _hours(result)
        line, = axes.step(hours, [sum(row["nodes"].values()) for row in result.timeline], where="post",
                          label=f"{name} (all)")
        if any("spot" in row["nodes"] for row in result.timeline):
            axes.step(hours, [row["nodes"].get("spot", 0) for row in result.timeline], where="post",
                      linestyle="--", color=line.get_color(), label=f"{name} (spot)")
    axes.set(xlabel="time (h)", ylabel="nodes held", title="Nodes")


def _cost(axes, results: Mapping[str, SimResult]) -> None:
    for name, result in results.items():
        axes.plot(_hours(result), [row["cost"] for row in result.timeline], label=name)
    axes.set(xlabel="time (h)", ylabel="cost so far (USD)", title="Cost")
