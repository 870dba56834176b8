"""Failure recovery: SIGKILL one of 2 workers mid-training; seconds from the kill to the next
completed step, and completed steps lost.

elastrain re-forms the group in place from the survivor. The peer is the same DDP script under
`torchrun --nnodes=1:2 --max-restarts=3` (c10d rendezvous), checkpointing every K steps: torchrun
restarts the workers, which resume from the checkpoint. Targets: recovery_s <= 2, speedup >= 5,
lost_steps <= 1. Usage: python -m bench.recovery [--repetitions 3] [--save]
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import common, peer
from elastrain.errors import UserError

KILL_AT = 110   # half-way between two of the peer's checkpoints
CHECKPOINT_EVERY = 20
PEER_TIMEOUT_S = 120   # a peer that has not recovered by then is counted at this figure


def elastrain_once(steps: int) -> tuple[float, int]:
    """(seconds from SIGKILL to the next completed step, completed steps lost) for elastrain."""
    from elastrain.elastic import RunOptions, parse_chaos, run_here
    from elastrain.runs import RunFolder

    spec = common.elastrain_spec(workers=2, max_steps=steps, every_steps=CHECKPOINT_EVERY, min_workers=1)
    with tempfile.TemporaryDirectory() as home:
        # As `elastrain run` runs it: under a driver actor.
        result = run_here(spec, Path(home), None, RunOptions(chaos=parse_chaos(f"kill:1@step={KILL_AT}")))
        events = RunFolder(Path(result.run_dir)).read_events()
    kill = next(e for e in events if e["kind"] == "kill")
    lost = next(e for e in events if e["kind"] == "worker_lost")
    recovered = next(e for e in events if e["kind"] == "recovered")
    return recovered["duration_s"], max(0, kill["step"] - lost["step"])


def peer_once(steps: int) -> tuple[float | None, int | None]:
    """The same figures for the DDP peer under torchrun (None if it did not recover in time)."""
    folder = peer.run_dir()
    process = peer.launch(steps, folder, ["--nnodes=1:2", "--max-restarts=3", "--rdzv-backend=c10d",
                                          f"--rdzv-endpoint=127.0.0.1:{_free_port()}"],
                          checkpoint_every=CHECKPOINT_EVERY)
    try:
        deadline = time.monotonic() + PEER_TIMEOUT_S
        while (not peer.step_times(folder) or peer.step_times(folder)[-1][0] < KILL_AT) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        first_pid = (folder / "pid-0").read_text()
        killed_at = time.time()
        os.kill(int((folder / "pid-1").read_text()), signal.SIGKILL)
        while time.monotonic() < deadline:   # the restarted rank 0 writes a new pid file
            if (folder / "pid-0").read_text() not in ("", first_pid):
                restarted_at = (folder / "pid-0").stat().st_mtime
                rows = peer.step_times(folder)
                after = [row for row in rows if row[1] > restarted_at]
                if after:
                    done_before = max(step for step, t in rows if t <= restarted_at)
                    return after[0][1] - killed_at, done_before - (after[0][0] - 1)
            time.sleep(0.01)
        return None, None
    finally:
        peer.stop(process, folder)


def _free_port() -> int:
    from elastrain.elastic.collective import free_port

    return free_port()


def main() -> None:
    args = common.arguments(__doc__, steps=1500)
    common.start_ray()
    ours, theirs, our_lost, their_lost = [], [], [], []
    for _ in range(args.repetitions):
        try:
            recovery, lost = elastrain_once(args.steps)
        except UserError as exc:
            sys.exit(f"error: {exc.line()}")
        ours.append(recovery)
        our_lost.append(lost)
        peer_recovery, peer_lost = peer_once(args.steps)
        theirs.append(peer_recovery if peer_recovery is not None else float(PEER_TIMEOUT_S))
        their_lost.append(peer_lost)
        print(f"elastrain {recovery:.3f} s ({lost} steps lost), torchrun {theirs[-1]:.3f} s "
              f"({peer_lost} steps lost)", file=sys.stderr)
    common.report("recovery", {
        "recovery_s": common.median(ours), "peer_recovery_s": common.median(theirs),
        "speedup": common.median([b / a for a, b in zip(ours, theirs, strict=True)]),
        "lost_steps": max(our_lost), "peer_lost_steps": max((x for x in their_lost if x is not None), default=None),
        "peer_not_recovered": sum(x is None for x in their_lost),
        "repetitions": args.repetitions, "kill_at_step": KILL_AT, "peer_checkpoint_every": CHECKPOINT_EVERY,
        "workers": 2, "peer": "torchrun --nnodes=1:2 --max-restarts=3 (c10d), DDP gloo, checkpoint + resume",
    }, args.save)


if __name__ == "__main__":
    main()
