"""The peer for bench/scaleout.py's capacity case: how long Ray Train's TorchTrainer (Train V2,
the default in Ray 2.60) takes to grow an elastic job, ScalingConfig(num_workers=(1, 2)), from 1
to 2 workers when a worker's CPUs become free.

The job trains the benchmarks' workload (common.py) with DDP via `prepare_model`. Rank 0 appends
each step's wall time, world size and number to a file, which this process reads while `fit()`
runs in a thread; every CHECKPOINT_EVERY steps the workers call `ray.train.report` with the
metrics and a checkpoint. Not every step: a report waits in a queue of one that the controller
empties once per poll (every 2 s), so reporting every step trains one step per poll, and the
release below would then always come just after a poll, a full poll before Ray Train's decision.

A blocker holds every CPU but one worker's while the job starts; once the job has checkpointed at
world size 1, and after a random part of Ray Train's poll interval, the blocker is released and
the clock starts. The figure is the wall time of the first step at world size 2 minus that start.
Ray Train grows by stopping the group and starting a new one, which resumes from the latest
checkpoint; each run also gives the times of the resize decision and of the new group's start
(from Ray Train's controller log) and of the last step at world size 1, and the step the new group
resumed from.

Ray Train's elastic policy does not look at free CPUs: it asks Ray's AutoscalingCoordinator, which
shares out the nodes' *total* resources among the requesters registered with it. A plain
placement group is invisible to it: Ray Train then plans 2 workers from the start and waits, in
60 s placement timeouts, for a group that cannot be placed, never training at 1. So the blocker
also registers its CPUs with the coordinator, before the job and at the same priority, as another
Ray library holding them would; releasing it removes its placement group and cancels its request.

Usage: python -m bench.raytrain_peer [--repetitions 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench import common

WAIT_S = 300.0
CPUS_PER_WORKER = 1.0
CHECKPOINT_EVERY = 5
# Steps the grown group trains before the job ends by itself.
GROWN_STEPS = 3
# Failed starts of a worker group (60 s placement timeout each) before fit() gives up, so that a
# job that cannot be placed ends within WAIT_S instead of retrying forever (Ray Train's default).
CONTROLLER_FAILURES = 3
# Ray Train's controller polls the workers, and so considers a resize, every 2 s
# (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S).
POLL_S = 2.0
BLOCKER = "bench-raytrain-peer-blocker"
NOTE = ("capacity: a placement group, registered with Ray's AutoscalingCoordinator, holds every CPU but one "
        "worker's; the clock starts at its release and stops at the first step at world size 2 (Ray Train stops "
        "the group and starts a new one from the latest checkpoint); *_s are seconds from the release")


def train_loop(config: dict) -> None:
    """One Ray Train worker: the benchmark workload, resumed from Ray Train's latest checkpoint.

    Stops at world size 1 when the file config["stop"] exists, and at a larger world size after
    GROWN_STEPS steps (every rank decides alike, so none is left waiting in a collective).
    """
    import itertools

    import torch

    x, y, net, model, optimizer, step, rank, world = common.raytrain_replica()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    stop = Path(config["stop"])
    for done in itertools.count():
        if (world == 1 and stop.exists()) or (world > 1 and done == GROWN_STEPS):
            return
        loss = common.raytrain_step(model, optimizer, x, y, order, step, rank, world)
        step += 1
        metrics = {"step": step, "world_size": world, "at": time.time(), "loss": loss.item()}
        if rank == 0:
            with open(config["log"], "a") as log:
                log.write(json.dumps(metrics) + "\n")
        if step % CHECKPOINT_EVERY:
            continue
        common.raytrain_report(metrics, net, optimizer, step, rank)


def measure_grow(repetitions: int) -> dict:
    """Grow Ray Train's elastic job from 1 to 2 workers `repetitions` times, on the Ray this
    process is connected to (an embedded one, started and shut down here, when none is)."""
    import ray

    started = not ray.is_initialized()
    if started:
        common.start_ray()
    try:
        return summary([once() for _ in range(repetitions)])
    finally:
        if started:
            ray.shutdown()


def summary(runs: list[dict]) -> dict:
    """The median of `runs` (results of :func:`once`), the runs and a note on what was measured.
    A run that did not grow counts as endless: the median is null once half of them did not."""
    seconds = common.median([run["seconds"] if run["seconds"] is not None else math.inf for run in runs])
    failures = [run["note"] for run in runs if "note" in run]
    return {"peer_request_to_step_s": None if math.isinf(seconds) else seconds, "runs": runs,
            "note": "; ".join([NOTE, *failures])}


def once() -> dict:
    """One job: the seconds from the release to the first step at world size 2 and the phases
    before it; or None and a note saying why it did not grow."""
    # 2.60 runs Train V2 by default; set it in case the environment turned it off.
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    name = f"raytrain-peer-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as home:
        log, stop = Path(home) / "steps.jsonl", Path(home) / "stop"
        trainer = TorchTrainer(
            train_loop, train_loop_config={"log": str(log), "stop": str(stop)},
            scaling_config=ScalingConfig(num_workers=(1, 2), use_gpu=False,
                                         resources_per_worker={"CPU": CPUS_PER_WORKER},
                                         elastic_resize_monitor_interval_s=1.0),
            run_config=RunConfig(name=name, storage_path=str(Path(home) / "storage"),
                                 failure_config=FailureConfig(controller_failure_limit=CONTROLLER_FAILURES)))
        blocker = Blocker(ray.cluster_resources().get("CPU", 0.0) - CPUS_PER_WORKER)
        outcome: dict = {}
        fit = threading.Thread(target=_fit, args=(trainer, outcome), daemon=True)
        fit.start()
        failure = None
        try:
            # Past the first checkpoint, so that the grown group has one to resume from.
            if _wait(log, fit, world_size=1, after_step=CHECKPOINT_EVERY) is None:
                failure = _failed(name, "no checkpointed step at world size 1", outcome)
            else:
                # The job's startup time would otherwise fix where the release falls in the poll cycle.
                time.sleep(random.uniform(0.0, POLL_S))
                released = time.time()
                blocker.release()
                grown = _wait(log, fit, world_size=2)
                if grown is None:
                    failure = _failed(name, "no step at world size 2", outcome)
        finally:
            blocker.release()
            stop.touch()
            fit.join(WAIT_S)
        if failure:
            return failure
        single = [row for row in _rows(log) if row["world_size"] == 1]
        events = _controller_log(name)

        def since_release(message: str) -> float | None:
            at = [event["timestamp_ns"] / 1e9 for event in events if event["message"].startswith(message)]
            return round(at[-1] - released, 4) if at else None

        return {"seconds": round(grown["at"] - released, 4),
                "decided_s": since_release("Detected changes in the cluster resources"),
                "group_started_s": since_release("Started training worker group of size 2"),
                "last_step_at_1_s": round(single[-1]["at"] - released, 4),
                "last_step_at_1": single[-1]["step"], "resumed_from_step": grown["step"] - 1}


class Blocker:
    """CPUs held by another job: a placement group, registered with the AutoscalingCoordinator."""

    def __init__(self, cpus: float) -> None:
        import ray
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            ResourceRequestPriority,
            get_or_create_autoscaling_coordinator,
        )
        from ray.util.placement_group import placement_group

        if cpus < CPUS_PER_WORKER:
            raise RuntimeError(f"the cluster has {cpus + CPUS_PER_WORKER:g} CPUs, too few for 2 workers")
        self._group = placement_group([{"CPU": cpus}])
        ray.get(self._group.ready(), timeout=WAIT_S)
        self._coordinator = get_or_create_autoscaling_coordinator()
        # Ray Train asks at HIGH priority; at equal priority the earlier request is served first.
        ray.get(self._coordinator.request_resources.remote(
            requester_id=BLOCKER, resources=[{"CPU": cpus}], expire_after_s=3 * WAIT_S,
            priority=ResourceRequestPriority.HIGH), timeout=WAIT_S)
        self._held = True

    def release(self) -> None:
        """Free the CPUs, then tell the coordinator; once."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if self._held:
            self._held = False
            remove_placement_group(self._group)
            ray.get(self._coordinator.cancel_request.remote(BLOCKER), timeout=WAIT_S)


def _fit(trainer, outcome: dict) -> None:
    try:
        trainer.fit()
    except Exception as exc:   # for the note; the driver goes on to clean up
        outcome["error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _rows(log: Path) -> list[dict]:
    """The steps rank 0 logged, without a line still being written."""
    return [json.loads(line) for line in log.read_text().split("\n")[:-1]] if log.exists() else []


def _wait(log: Path, fit: threading.Thread, world_size: int, after_step: int = 0) -> dict | None:
    """The first logged step at `world_size` past `after_step`; None when the job ends or WAIT_S passes first."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and fit.is_alive():
        for row in _rows(log):
            if row["world_size"] == world_size and row["step"] > after_step:
                return row
        time.sleep(0.05)
    return None


def _controller_log(name: str) -> list[dict]:
    """What Ray Train's controller logged for the run `name`, in order."""
    from ray.train.v2._internal.logging.logging import LoggingManager

    events = []
    for path in Path(LoggingManager.get_log_directory()).glob("ray-train-sys-controller-*.log"):
        lines = path.read_text().split("\n")[:-1]   # without a line still being written
        events += [event for event in map(json.loads, lines) if event.get("run_name") == name]
    return sorted(events, key=lambda event: event["timestamp_ns"])


def _failed(name: str, what: str, outcome: dict) -> dict:
    """A run without a figure, with what Ray Train's controller logged last."""
    messages = [event["message"].splitlines()[0][:160] for event in _controller_log(name)
                if event["levelname"] != "DEBUG"]
    last = list(dict.fromkeys(reversed(messages)))[:4][::-1]
    note = f"{what} within {WAIT_S:g} s; Ray Train's controller logged last: {' | '.join(last) or 'nothing'}"
    if "error" in outcome:
        note += f"; fit() raised {outcome['error']}"
    return {"seconds": None, "note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=3, help="jobs to grow (default 3); the median is reported")
    print(json.dumps(measure_grow(parser.parse_args().repetitions)))


if __name__ == "__main__":
    main()
