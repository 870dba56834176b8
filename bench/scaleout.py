"""Scale-out as a user feels it: from a `scale` request (and, separately, from new capacity
appearing) to the first completed step of the grown group, 1 -> 2 workers; and how long the
running worker pauses meanwhile. Targets: <= 2 s median from the request, pause <= 0.5 s.

- request: the job runs on 1 worker with its warm standby loaded (`resources.warm_standby`, on
  by default: a loaded worker process that holds no CPU); the benchmark asks for 2 workers.
- capacity: the same, but every other CPU is held by another actor when the request comes; it
  is released 2 s later, and the clock starts then.
- no spares: the request case with `warm_standby: false` (a new worker process starts: Python,
  Ray, torch, the data, the model).
Each figure is measured from the benchmark's own clock (its request, its release) to the wall
time of the grown group's first step, which the job's `resized` event records.

- peer: Ray Train's TorchTrainer growing an elastic job, num_workers=(1, 2), when another
  holder's CPUs are released (it has no scale request: new capacity is what makes it grow); see
  bench/raytrain_peer.py. Its runs come interleaved with ours.

Usage: python -m bench.scaleout [--repetitions 3] [--save]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import common, raytrain_peer

if TYPE_CHECKING:
    from elastrain.runs import RunFolder

WAIT_S = 120.0


def once(standby: bool, capacity: bool) -> tuple[float, float]:
    """(seconds from the request or the release of capacity to the grown group's first step,
    the running worker's pause in seconds) of one job."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from elastrain.elastic import RunOptions, run_job
    from elastrain.elastic.control import JobControl
    from elastrain.runs import RunFolder

    spec = common.elastrain_spec(workers=2, max_steps=10**7, min_workers=1)
    resources = spec.resources.model_copy(update={"warm_standby": standby, "cpus_per_worker": 1.0})
    spec = spec.model_copy(update={"resources": resources})
    control = JobControl()
    with tempfile.TemporaryDirectory() as home:
        folder = RunFolder.of(Path(home), "scaleout")
        runner = threading.Thread(target=run_job, args=(spec, Path(home)),
                                  kwargs={"options": RunOptions(workers=1, control=control, job_id="scaleout")})
        runner.start()
        try:
            _wait_for(folder, "standby" if standby else "start")
            time.sleep(1.0)   # a few steps on one worker
            blocker = None
            if capacity:
                blocker = placement_group([{"CPU": ray.available_resources().get("CPU", 0.0)}])
                ray.get(blocker.ready())
            asked = time.time()
            control.scale(2)
            if blocker is not None:
                time.sleep(2.0)
                asked = time.time()
                remove_placement_group(blocker)
            resized = _wait_for(folder, "resized")
        finally:
            control.cancel()
            runner.join()
    return resized["detail"]["first_step_at"] - asked, resized["detail"]["pause_s"]


def _wait_for(folder: RunFolder, kind: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for event in folder.read_events():
            if event["kind"] == kind:
                return event
        time.sleep(0.05)
    raise RuntimeError(f"no {kind} event in {WAIT_S:g} s ({folder.path})")


def main() -> None:
    args = common.arguments(__doc__, steps=0)
    common.start_ray()
    request, pause, capacity, cold, peer = [], [], [], [], []
    for _ in range(args.repetitions):
        seconds, paused = once(standby=True, capacity=False)
        request.append(seconds)
        pause.append(paused)
        capacity.append(once(standby=True, capacity=True)[0])
        cold.append(once(standby=False, capacity=False)[0])
        peer.append(raytrain_peer.once())
        print(f"request -> step {request[-1]:.2f} s (pause {pause[-1]:.2f} s), capacity -> step {capacity[-1]:.2f} s, "
              f"no spares {cold[-1]:.2f} s, Ray Train {peer[-1]['seconds']} s", file=sys.stderr)
    ray_train = raytrain_peer.summary(peer)
    common.report("scaleout", {
        "request_to_step_s": common.median(request), "capacity_to_step_s": common.median(capacity),
        "pause_s": common.median(pause), "no_spares_request_to_step_s": common.median(cold),
        "peer_request_to_step_s": ray_train["peer_request_to_step_s"], "peer_runs": ray_train["runs"],
        "peer_note": ray_train["note"], "repetitions": args.repetitions, "workers": "1 -> 2",
        "model": f"mlp 64-{'-'.join(map(str, common.HIDDEN))}-10, adam",
    }, args.save)


if __name__ == "__main__":
    main()
