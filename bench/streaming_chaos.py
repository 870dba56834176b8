"""Exactly once under chaos, on sharded data (issue 29): one epoch of a job streaming Parquet shards
(`bench.streaming`'s seeded HIGGS-like set) while `--chaos` kills a worker and resizes the group
2 -> 1 -> 3 -> 2, then a SIGKILL of the driver and a resume to the epoch's end. The workers'
sample-id traces (the `trace_dir` test hook) must show every training row exactly once.

How: this process starts a local Ray; the job's driver runs in a child process on it (`run_job`
with `RunOptions(chaos=..., trace_dir=...)`, as the tests do: `elastrain run` has no flag for the
trace). Once the chaos actions have taken effect and a checkpoint past them is written, the driver
is SIGKILLed; once its workers are gone, a second child resumes the job (`resume_job`, what
`elastrain resume` runs) with the same trace folder. The steps after that checkpoint are then
trained again: the epoch's history is, for each step, its latest attempt (the resumed driver's
if it traced the step, else the highest group generation of the first driver). Measured, for
epoch 0 of that history: repeated samples (training row ids trained more than once), missing
samples (training row ids never trained), and the group sizes the run folder's events record.
Checked besides: every step traced, each step's rank shards splitting its batch, the attempts the
history replaced taking the same rows (resume goes on as if uninterrupted), and, counted in, the
repeats they would have made (the trace does see a repeat).

    python -m bench.streaming_chaos [--gb 1] [--data /tmp/elastrain-bench-streaming] [--save]
    python -m bench.streaming_chaos --rows 200000    # a small set written here, for a quick run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bench import common
from bench.streaming import BATCH, data_set
from bench.streaming import spec as streaming_spec

VALIDATION_FRACTION = 0.2   # the spec's default: the share of rows held out by hash of the row id
# Where the chaos actions and the checkpoints fall, as fractions of the epoch's steps: the four
# actions in its first ~60%, a checkpoint every 1/20 of it, so that several land in the epoch.
# Each action waits until the previous resize has taken effect, and the group trains on while
# joiners load (~10 s each on a busy 2-core machine, a fifth of the 1 GB epoch): the actions
# come early, so that the resize to 3 and back to 2 still settle before about 3/4 of the epoch.
KILL_AT, SCALE_1_AT, SCALE_3_AT, SCALE_2_AT = 0.06, 0.15, 0.25, 0.45
CHECKPOINTS_PER_EPOCH = 20
# The small set that --rows writes: shards of 50,000 rows in pieces of 16,384 (4 pieces a shard).
SMALL_SHARD_ROWS, SMALL_GROUP_ROWS = 50_000, 16_384
# Generous bounds, for a busy 2-core machine: they fail a run that is stuck, not one that is slow.
JOB_TIMEOUT_S = 3600
WORKERS_GONE_TIMEOUT_S = 300


def count_rows(folder: Path) -> int:
    """Rows in the shards under `folder`, from their Parquet footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(folder.glob("part-*.parquet")))


def job_spec(folder: Path, batch: int, every_steps: int) -> dict:
    """`bench.streaming`'s job for one epoch, on 1 to 3 workers, checkpointed every `every_steps` steps."""
    job = streaming_spec(f"parquet:{folder}/part-*.parquet", 2, None, epochs=1)
    job["name"] = "bench-streaming-chaos"
    job["train"]["batch_size"] = batch
    job["resources"]["workers"] = {"min": 1, "max": 3}
    job["checkpoint"] = {"every_steps": every_steps}
    return job


def chaos_plan(steps: int) -> str:
    """Kill rank 1 of 2, then resize to 1, 3 and 2 workers, over the first ~60% of `steps`."""
    at = [max(1, round(fraction * steps)) for fraction in (KILL_AT, SCALE_1_AT, SCALE_3_AT, SCALE_2_AT)]
    return f"kill:1@step={at[0]},scale=1@step={at[1]},scale=3@step={at[2]},scale=2@step={at[3]}"


# the drivers (child processes) -------------------------------------------------------------------

def drive(args: argparse.Namespace) -> None:
    """In a child process: run (or resume) the job on the Ray at RAY_ADDRESS; print its result."""
    from elastrain.elastic.chaos import parse_chaos
    from elastrain.elastic.job import RunOptions, resume_job, run_job
    from elastrain.spec import load_spec

    home = Path(os.environ["ELASTRAIN_HOME"])
    if args.drive == "run":
        options = RunOptions(chaos=parse_chaos(args.chaos), trace_dir=str(args.trace_dir), job_id=args.job_id,
                             workers=2)
        result = run_job(load_spec(args.spec_file), home, options=options)
    else:   # the group the first driver had when it was killed: 2 workers
        result = resume_job(args.job_id, home, options=RunOptions(trace_dir=str(args.trace_dir), workers=2))
    print(json.dumps(result.to_dict()), flush=True)


def start_driver(mode: str, work: Path, job_id: str, env: dict, chaos: str = "") -> subprocess.Popen:
    """A driver child running `mode` (run or resume) of job `job_id`; its output goes to work/MODE.log."""
    command = [sys.executable, "-m", "bench.streaming_chaos", "--drive", mode, "--job-id", job_id,
               "--trace-dir", str(work / "traces"), "--spec-file", str(work / "job.yaml"), "--chaos", chaos]
    with (work / f"{mode}.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[1])


def last_json_line(log: Path) -> dict:
    """The JSON line a driver printed last (its JobResult)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"the driver printed no result; its output: {log}")
    return json.loads(lines[-1])


def worker_processes() -> list[int]:
    """The elastrain worker actors of this process's Ray (a concurrent Ray's are not counted)."""
    pids = []
    for pid in common.descendants(os.getpid()):
        try:
            if (Path("/proc") / str(pid) / "cmdline").read_bytes().startswith(b"ray::Worker"):
                pids.append(pid)
        except OSError:
            continue   # the process ended while we looked
    return pids


def chaos_settled(events: list[dict]) -> int | None:
    """The step from which the group trains at its last chaos size (the last `scale_request` of the
    chaos has taken effect), or None while it has not."""
    asked = [i for i, e in enumerate(events) if e["kind"] == "scale_request" and e["detail"].get("source") == "chaos"]
    if len(asked) < 3 or not any(e["kind"] == "kill" for e in events):
        return None
    target = events[asked[-1]]["detail"]["target"]
    for event in events[asked[-1] + 1:]:
        if event["kind"] == "resized" and event["workers"] == target:
            return event["step"]
    return None


def kill_after_chaos(driver: subprocess.Popen, events_file: Path) -> dict:
    """SIGKILL `driver` once the chaos has settled and a checkpoint past it is recorded; when and
    where. Fails if the driver ends first (the plan left too few steps for it)."""
    from elastrain.runs import RunFolder

    folder = RunFolder(events_file.parent)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while driver.poll() is None and time.monotonic() < deadline:
        events = folder.read_events() if events_file.exists() else []
        settled = chaos_settled(events)
        if settled is not None:
            past = [e["step"] for e in events if e["kind"] == "checkpoint" and e["step"] > settled]
            if past:
                driver.send_signal(signal.SIGKILL)
                driver.wait()
                return {"settled_step": settled, "checkpoint_step": past[0]}
        time.sleep(0.1)
    driver.kill()
    raise SystemExit(f"the driver ended (exit code {driver.wait()}) before the chaos settled and a checkpoint "
                     f"past it was written; see {events_file.parent}")


def wait_for_workers_gone() -> None:
    """Wait until the killed driver's worker actors have ended (Ray ends an owner's actors)."""
    deadline = time.monotonic() + WORKERS_GONE_TIMEOUT_S
    while worker_processes():
        if time.monotonic() > deadline:
            raise SystemExit(f"the killed driver's workers {worker_processes()} still run after "
                             f"{WORKERS_GONE_TIMEOUT_S} s")
        time.sleep(0.2)


# the trace ---------------------------------------------------------------------------------------

@dataclass
class StepAttempt:
    """The records of one attempt at a step: by its latest (part, generation), each rank's."""

    key: tuple[int, int]
    batch: np.ndarray
    shards: dict[int, np.ndarray] = field(default_factory=dict)
    world_size: int = 0
    batches_agree: bool = True


@dataclass
class Trace:
    """The epoch's final history as the traces record it."""

    steps: dict[int, StepAttempt]
    superseded: dict[tuple[int, tuple[int, int]], np.ndarray]   # (step, key): the batch of an earlier attempt
    last_step_before_kill: int
    torn_lines: int
    other_epochs: int


def read_trace(folder: Path, cut: dict[str, int]) -> Trace:
    """Each step's latest attempt in the worker-*.jsonl files of `folder`. The bytes of a file
    before `cut[name]` were written under the killed driver (part 0), the rest after the resume
    (part 1): a step the resumed job trained replaces the killed driver's attempt, and within a
    part the group's higher generation replaces a lower one (a step redone after a loss)."""
    steps: dict[int, StepAttempt] = {}
    superseded: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
    last_before, torn, other_epochs = 0, 0, 0
    for path in sorted(folder.glob("worker-*.jsonl")):
        boundary = cut.get(path.name, 0)
        with path.open("rb") as handle:
            offset = 0
            for line in handle:
                part = 0 if offset < boundary else 1
                offset += len(line)
                try:
                    record = json.loads(line)
                except ValueError:   # a line cut short by a SIGKILL
                    torn += 1
                    continue
                if record["epoch"] != 0:
                    other_epochs += 1
                    continue
                step = record["step"]
                if part == 0:
                    last_before = max(last_before, step)
                key = (part, record["generation"])
                held = steps.get(step)
                if held is None or key > held.key:
                    if held is not None:
                        superseded[(step, held.key)] = held.batch
                    held = steps[step] = StepAttempt(key, np.asarray(record["batch"], np.int64),
                                                     world_size=record["world_size"])
                elif key < held.key:
                    superseded.setdefault((step, key), np.asarray(record["batch"], np.int64))
                    continue
                held.batches_agree &= bool(np.array_equal(held.batch, record["batch"]))
                held.shards[record["rank"]] = np.asarray(record["indices"], np.int64)
    return Trace(steps, superseded, last_before, torn, other_epochs)


def training_ids(run_dir: Path) -> tuple[np.ndarray, int]:
    """The data set's training row ids (by the job's manifest and split hash) and its row count."""
    from elastrain.data.streaming import ShardedSource, validation_mask
    from elastrain.runs import RunFolder

    spec = RunFolder(run_dir).read_spec()
    source = ShardedSource(spec)
    total = sum(sum(rows) for rows in source.manifest.pieces)
    ids = np.flatnonzero(~validation_mask(np.arange(total, dtype=np.int64), source.manifest.seed,
                                          spec.data.validation_fraction))
    assert len(ids) == source.n_train, (len(ids), source.n_train)   # the split the workers stream
    return ids, total


def group_sizes(events: list[dict]) -> list[int]:
    """The sizes the group trained at, in order, from the events that (re)form it."""
    forming = ("start", "resume", "worker_lost", "scale_out", "scale_in")
    sizes: list[int] = []
    for event in events:
        if event["kind"] in forming and (not sizes or sizes[-1] != event["workers"]):
            sizes.append(event["workers"])
    return sizes


def collapse(values: list[int]) -> list[int]:
    """`values` without consecutive repeats."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


# the benchmark -----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="the data set's size (default 1, as bench.streaming)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-streaming",
                        help="where bench.streaming's data sets are written once and reused")
    parser.add_argument("--rows", type=int, default=None,
                        help="instead, write a small set of this many rows in the run's folder (a quick run)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"global batch (default {BATCH}; with --rows, rows / 4000: ~3,200 steps, an epoch "
                             "long enough for joining workers to load before it ends)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (traces, run folder, logs)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    # internal: the driver child processes
    parser.add_argument("--drive", choices=["run", "resume"], help=argparse.SUPPRESS)
    parser.add_argument("--job-id", help=argparse.SUPPRESS)
    parser.add_argument("--trace-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spec-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chaos", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args)
        return
    began = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-streaming-chaos-"))
    if args.rows:
        from bench.higgs_like import write_shards

        data = work / "data"
        write_shards(data, args.rows, SMALL_SHARD_ROWS, SMALL_GROUP_ROWS, seed=0)
        batch = args.batch or max(1, args.rows // 4000)
    else:
        args.data.mkdir(parents=True, exist_ok=True)
        data = data_set(args.data, args.gb)
        batch = args.batch or BATCH
    # The epoch's steps, estimated before the job's statistics pass: enough to place the chaos.
    planned_steps = math.ceil(count_rows(data) * (1 - VALIDATION_FRACTION) / batch)
    every = max(1, planned_steps // CHECKPOINTS_PER_EPOCH)
    chaos = chaos_plan(planned_steps)
    (work / "traces").mkdir()   # the workers append to files there, they do not create it
    (work / "job.yaml").write_text(yaml.safe_dump(job_spec(data, batch, every)))
    print(f"work folder {work}; {planned_steps} steps planned, checkpoint every {every}, chaos {chaos}",
          file=sys.stderr)

    import ray

    from elastrain.elastic.connect import EMBEDDED_SYSTEM_CONFIG
    from elastrain.runs import RunFolder, new_job_id

    # One Ray that outlives the killed driver, so that the resumed driver finds the same cluster.
    ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=False, _system_config=EMBEDDED_SYSTEM_CONFIG)
    home = work / "home"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "ELASTRAIN_HOME": str(home)}
    job_id = new_job_id("bench-streaming-chaos")
    run_dir = RunFolder.of(home, job_id).path
    drivers: list[subprocess.Popen] = []
    try:
        job_began = time.time()
        driver = start_driver("run", work, job_id, env, chaos)
        drivers.append(driver)
        killed = kill_after_chaos(driver, run_dir / "events.jsonl")
        wait_for_workers_gone()
        # What the killed driver's workers wrote ends here; the resumed job's lines come after.
        cut = {path.name: path.stat().st_size for path in (work / "traces").glob("worker-*.jsonl")}
        resumed = start_driver("resume", work, job_id, env)
        drivers.append(resumed)
        code = resumed.wait(timeout=JOB_TIMEOUT_S)
        job_wall = time.time() - job_began
        result = last_json_line(work / "resume.log")
        if code != 0 or result["status"] != "succeeded":
            raise SystemExit(f"the resumed job ended {result['status']} (exit code {code}): {result['message']}")
    finally:
        for child in drivers:   # a driver left running by a failure here ends with the benchmark
            if child.poll() is None:
                child.kill()
                child.wait()
        ray.shutdown()

    analysis_began = time.time()
    events = RunFolder(run_dir).read_events()
    resume_events = [e for e in events if e["kind"] == "resume"]
    trace = read_trace(work / "traces", cut)
    ids, total_rows = training_ids(run_dir)
    final = [trace.steps[s] for s in sorted(trace.steps)]
    counts = np.bincount(np.concatenate([a.batch for a in final]), minlength=total_rows)
    train = np.zeros(total_rows, bool)
    train[ids] = True
    # Each step's shards (the ids each rank computed) must split its batch: disjoint, complete.
    split_wrong = sum(1 for a in final if not a.batches_agree or len(a.shards) != a.world_size
                      or not np.array_equal(np.sort(np.concatenate(list(a.shards.values()))), np.sort(a.batch)))
    redone = sorted(s for s, a in trace.steps.items() if a.key[0] == 1 and s <= trace.last_step_before_kill)
    # The attempts the final history replaced: a redone step must take the same rows (resume goes
    # on as if uninterrupted), and counted too they show that the trace does see the repeats.
    other_batch = sum(1 for (step, _), batch in trace.superseded.items()
                      if not np.array_equal(batch, trace.steps[step].batch))
    with_superseded = counts + np.bincount(np.concatenate([np.zeros(0, np.int64), *trace.superseded.values()]),
                                           minlength=total_rows)
    figures = {
        "repeated_samples": int((counts[train] > 1).sum()),
        "missing_samples": int((counts[train] == 0).sum()),
        "extra_trainings": int(np.maximum(counts - 1, 0).sum()),   # every training beyond a row's first
        "validation_rows_trained": int(counts[~train].sum()),
        "training_rows": len(ids),
        "steps": result["steps"],
        "steps_traced": len(trace.steps),
        "steps_untraced": len(set(range(1, result["steps"] + 1)) - set(trace.steps)),
        "steps_with_wrong_shards": split_wrong,
        "resizes": group_sizes(events),
        "world_sizes_by_step": collapse([a.world_size for a in final]),
        "chaos": chaos,
        "chaos_settled_at_step": killed["settled_step"],
        "checkpoint_every_steps": every,
        "driver_killed_at_step": trace.last_step_before_kill,
        "resumed_from_checkpoint_step": resume_events[-1]["detail"]["from_checkpoint"] if resume_events else None,
        "steps_redone_after_resume": len(redone),
        "superseded_attempts": len(trace.superseded),
        "superseded_with_other_rows": other_batch,
        "repeated_if_superseded_counted": int((with_superseded[train] > 1).sum()),
        "torn_trace_lines": trace.torn_lines,
        "other_epoch_records": trace.other_epochs,
        "status": result["status"],
        "wall_s": round(time.time() - began, 1),
        "job_wall_s": round(job_wall, 1),
        "analysis_s": round(time.time() - analysis_began, 1),
        "rows": total_rows, "global_batch": batch,
        "data": str(data),
    }
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    common.report("streaming_chaos", figures, args.save)


if __name__ == "__main__":
    main()
