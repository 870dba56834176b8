"""Scheduling policies on the Pollux traces (the repository's `traces/`), and the speed of one round.

What it measures (all with `elastrain.sim`, 16 nodes x 4 GPUs, 60 s rounds unless said):

- fidelity: mean over workloads 1-8 (load 1.0) of each workload's average JCT, for fifo,
  tiresias and goodput with a 30 s re-allocation penalty; published Tiresias 4038 s, Pollux
  2751 s (traces README);
- goodput and tiresias at loads 0.5 / 1.5 / 2.0 and on the realistic workloads, and goodput with
  the penalty set to our engine's measured resize cost (`--resize-cost-s`, docs/benchmarks.md);
- spot: goodput renting spot and on-demand nodes (the three 16-node availability traces summed
  into one spot pool, prices from `examples/prices.yaml`, a slot rented when its speedup is worth
  its price at `--spot-min-speedup` per on-demand slot) against the same policy renting only
  on-demand nodes with its default threshold (0.5), both at most 16 nodes; the spot runs start
  at each whole day of the traces (0-11: the shortest zone trace covers 11.3 days), and the
  on-demand-only policy at the spot runs' threshold is reported too;
- speed: one `GoodputPolicy.allocate` for 160 jobs on 64 GPUs and for 1,000 jobs on 2,000 GPUs
  (jobs with fitted throughput models from the traces, median of 5).

Usage: python -m bench.scheduler [--quick] [--save]
The JSON last line carries goodput_mean_jct_s, tiresias_mean_jct_s, fifo_mean_jct_s,
round_s_160x64, round_s_1000x2000, spot_cost_ratio and spot_jct_ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from functools import cache
from multiprocessing import Pool
from pathlib import Path

from bench import common
from elastrain.scheduler import (
    BatchLimits,
    Cluster,
    FifoPacking,
    GoodputPolicy,
    JobDemand,
    NodePool,
    StepObservation,
    Tiresias,
    fit_throughput,
)
from elastrain.sim.apps import AppModel
from elastrain.sim.simulator import PoolConfig, SimConfig, Simulator
from elastrain.sim.spot import load_availability, load_prices
from elastrain.sim.traces import load_apps, load_workload

TRACES = Path(__file__).resolve().parents[1] / "traces"
POLLUX = TRACES / "pollux"
ZONES = sorted((TRACES / "spot" / "availability" / "16-node" / "aws-08-27-2023").glob("*.json"))
PRICES = Path(__file__).resolve().parents[1] / "examples" / "prices.yaml"
NODES = 16
DAY_S = 86_400.0


@cache
def apps() -> dict[str, AppModel]:
    """Every application's model, loaded once per process."""
    return {name: AppModel(trace) for name, trace in load_apps(POLLUX / "traces").items()}


def simulate(task: tuple) -> dict:
    """One simulation: (policy, workload folder, index, penalty, setting, min speedup per on-demand
    slot, trace start)."""
    policy_name, folder, index, penalty, setting, min_speedup, start_s = task
    submissions = load_workload(POLLUX / folder / f"workload-{index}.csv")
    prices = load_prices(PRICES)
    adaptive = policy_name == "goodput"
    autoscale = setting != "fixed"
    if setting == "spot":
        offered = load_availability(ZONES, start_s=start_s)
        spot_now = min(NODES, offered(0.0))
        pools = (PoolConfig("spot", NODES, prices.spot_per_hour, spot=True, initial_nodes=spot_now,
                            availability=offered),
                 PoolConfig("on-demand", NODES, prices.on_demand_per_hour, initial_nodes=NODES - spot_now))
    else:
        pools = (PoolConfig("on-demand", NODES, prices.on_demand_per_hour, initial_nodes=NODES),)
    policy = {"fifo": lambda: FifoPacking(as_requested=True), "tiresias": Tiresias,
              "goodput": lambda: GoodputPolicy(restart_penalty_s=penalty, autoscale=autoscale,
                                               min_speedup_per_slot=min_speedup)}[policy_name]()
    config = SimConfig(pools, 4, 60.0, penalty, adaptive_batch=adaptive, max_nodes=NODES)
    result = Simulator(submissions, apps(), policy, config).run()
    return {"task": task, "mean_jct_s": result.mean_jct_s, "cost": result.cost, "unfinished": result.unfinished,
            "hours": len(result.timeline) * 60.0 / 3600}


def demands(count: int, rng: random.Random) -> list[JobDemand]:
    """`count` jobs of the traces' applications, each with a throughput model fitted from a few
    configurations it has run on, gradient noise and work left at a random point of training."""
    models = apps()
    names = sorted(models)
    fitted = {}
    for name in names:
        app = models[name]
        seen = []
        for counts in ((1,), (2,), (4,), (4, 4)):
            _, micro, _ = app.step(counts, app.initial_batch * sum(counts))
            seen.append(StepObservation(len(counts), sum(counts), micro, app.micro_step_time(counts, micro)))
        fitted[name] = fit_throughput(seen)
    jobs = []
    for i in range(count):
        app = models[rng.choice(names)]
        progress = rng.uniform(0, 0.9) * app.target
        jobs.append(JobDemand(f"job-{i}", i, 1, 64, current=rng.choice([0, 0, 1, 2, 4, 8]), requested=4,
                              submitted_s=float(i), batch_size=app.initial_batch,
                              batch=BatchLimits(app.initial_batch, app.max_batch, app.max_local, app.min_local),
                              speed=fitted[app.name], max_workers_seen=rng.choice([1, 2, 4, 8, 16, 32]),
                              noise=app.noise(progress, app.initial_batch), remaining=app.target - progress))
    return jobs


def round_seconds(jobs: int, gpus: int, repetitions: int = 5) -> float:
    """Median seconds of one goodput round for `jobs` jobs on `gpus` GPUs (4 per node)."""
    batch = demands(jobs, random.Random(0))
    cluster = Cluster((NodePool("on-demand", 4, gpus // 4, gpus // 4),))
    policy = GoodputPolicy(autoscale=False)
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        policy.allocate(0.0, cluster, batch)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def main() -> None:
    """Run everything (see the module docstring) and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="load 1.0 and one spot start only")
    parser.add_argument("--resize-cost-s", type=float, default=0.37,
                        help="our engine's measured resize pause (docs/benchmarks.md, join)")
    parser.add_argument("--spot-min-speedup", type=float, default=1.0,
                        help="spot runs: speedup an on-demand slot must add to be rented (spot: a third)")
    parser.add_argument("--save", action="store_true", help="also write bench/results/scheduler.json")
    args = parser.parse_args()

    workloads = range(1, 9)
    default = 0.5   # GoodputPolicy's min_speedup_per_slot
    tasks = [(p, "workloads", w, 30.0, "fixed", default, 0.0) for p in ("fifo", "tiresias", "goodput")
             for w in workloads]
    loads = [] if args.quick else ["workloads-0.5", "workloads-1.5", "workloads-2.0", "workloads-realistic"]
    tasks += [(p, folder, w, 30.0, "fixed", default, 0.0) for p in ("tiresias", "goodput") for folder in loads
              for w in workloads]
    tasks += [("goodput", "workloads", w, args.resize_cost_s, "fixed", default, 0.0) for w in workloads]
    starts = [0.0] if args.quick else [day * DAY_S for day in range(12)]
    tasks += [("goodput", "workloads", w, 30.0, "on-demand", threshold, 0.0) for w in workloads
              for threshold in {default, args.spot_min_speedup}]
    tasks += [("goodput", "workloads", w, 30.0, "spot", args.spot_min_speedup, s) for w in workloads for s in starts]
    with Pool(os.cpu_count()) as pool:
        results = pool.map(simulate, sorted(tasks, key=lambda t: t[1] != "workloads-2.0"))

    def pick(policy: str, folder: str = "workloads", penalty: float = 30.0, setting: str = "fixed",
             start_s: float = 0.0, threshold: float = default) -> list[dict]:
        return sorted((r for r in results if r["task"][0] == policy and r["task"][1] == folder
                       and r["task"][3] == penalty and r["task"][4] == setting and r["task"][5] == threshold
                       and r["task"][6] == start_s), key=lambda r: r["task"][2])

    def mean_jct(rows: list[dict]) -> float:
        return round(statistics.mean(r["mean_jct_s"] for r in rows), 1)

    figures = {p: mean_jct(pick(p)) for p in ("fifo", "tiresias", "goodput")}
    report = {
        "goodput_mean_jct_s": figures["goodput"], "tiresias_mean_jct_s": figures["tiresias"],
        "fifo_mean_jct_s": figures["fifo"],
        "per_workload_s": {p: [round(r["mean_jct_s"]) for r in pick(p)] for p in ("fifo", "tiresias", "goodput")},
        "published_s": {"pollux": 2751, "tiresias": 4038},
        "goodput_mean_jct_s_resize_cost": mean_jct(pick("goodput", penalty=args.resize_cost_s)),
        "resize_cost_s": args.resize_cost_s,
        "unfinished": sum(r["unfinished"] for r in results),
    }
    for folder in loads:
        report[f"{folder}_mean_jct_s"] = {p: mean_jct(pick(p, folder)) for p in ("tiresias", "goodput")}
    on_demand = pick("goodput", setting="on-demand")
    stingy = pick("goodput", setting="on-demand", threshold=args.spot_min_speedup)
    spot_rows = {s: pick("goodput", setting="spot", start_s=s, threshold=args.spot_min_speedup) for s in starts}
    cost_ratios = [sum(r["cost"] for r in rows) / sum(r["cost"] for r in on_demand) for rows in spot_rows.values()]
    jct_ratios = [mean_jct(rows) / mean_jct(on_demand) for rows in spot_rows.values()]
    fixed_cost = [r["hours"] * NODES * load_prices(PRICES).on_demand_per_hour for r in pick("goodput")]
    report.update({
        "spot_cost_ratio": round(statistics.mean(cost_ratios), 3),
        "spot_jct_ratio": round(statistics.mean(jct_ratios), 3),
        "spot_by_start": {f"{s / DAY_S:g}d": {"cost_ratio": round(c, 3), "jct_ratio": round(j, 3)}
                          for s, c, j in zip(starts, cost_ratios, jct_ratios, strict=True)},
        "spot_starts_meeting_both": sum(c <= 0.4 and j <= 1.1 for c, j in zip(cost_ratios, jct_ratios, strict=True)),
        "spot_worst_workload_cost_ratio": round(max(
            r["cost"] / od["cost"] for rows in spot_rows.values() for r, od in zip(rows, on_demand, strict=True)), 3),
        "on_demand_autoscaled": {"mean_jct_s": mean_jct(on_demand),
                                 "cost_usd": round(statistics.mean(r["cost"] for r in on_demand), 1)},
        "on_demand_autoscaled_at_spot_threshold": {"mean_jct_s": mean_jct(stingy),
                                                   "cost_usd": round(statistics.mean(r["cost"] for r in stingy), 1)},
        "on_demand_fixed_16_nodes": {"mean_jct_s": figures["goodput"],
                                     "cost_usd": round(statistics.mean(fixed_cost), 1)},
        "spot_mean_cost_usd": round(statistics.mean(r["cost"] for rows in spot_rows.values() for r in rows), 1),
        "spot_min_speedup_per_slot": args.spot_min_speedup,
        "round_s_160x64": round_seconds(160, 64),
        "round_s_1000x2000": round_seconds(1000, 2000),
    })
    common.report("scheduler", report, args.save)


if __name__ == "__main__":
    main()
