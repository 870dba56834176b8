"""`make demo`, many times in a row: does every run keep the README's promise?

The README says the demo's job shrinks to 1 worker, grows to 3, loses one to a SIGKILL at step
200 and settles on 2, "with no step lost". A run meets that promise when:

- the SIGKILL costs exactly the killed worker (the `worker_lost` events lose 1 worker in all;
  `hung` says how many of the lost the controller took for hung rather than dead);
- `recovered` (from the last step completed before the loss to the next one) took <= 1 s;
- the job succeeded on 2 workers.

Each run is the Makefile's own command (`elastrain run examples/demo.yaml --chaos DEMO_CHAOS`,
the chaos read from the Makefile), a process of its own with an ELASTRAIN_HOME of its own. The
demo runs 3 workers on a 2-core machine: it is over-subscribed by design; `--load N` adds N
busy processes beside it (a machine that is doing something else too).

Usage: python -m bench.demo [--runs 10] [--load 0] [--save]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report
from elastrain.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
RECOVERY_TARGET_S = 1.0
FINAL_WORKERS = 2   # what the README says the demo settles on


def demo_chaos() -> str:
    """The chaos actions `make demo` injects (the Makefile's DEMO_CHAOS)."""
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("DEMO_CHAOS"):
            return line.split(":=", 1)[1].strip()
    raise SystemExit("bench.demo: the Makefile defines no DEMO_CHAOS")


def judge(events: list[dict]) -> dict:
    """What one run's events say about the promise: workers lost (in all, and killed as hung),
    the recovery's seconds, the final state and worker count, and whether the run met it."""
    lost = [e for e in events if e["kind"] == "worker_lost"]
    lost_workers = sum(e.get("detail", {}).get("lost", 0) for e in lost)
    hung = sum(e.get("detail", {}).get("hung", 0) for e in lost)
    recovered = [e["duration_s"] for e in events if e["kind"] == "recovered"]
    final = events[-1] if events else {}
    verdict = {"lost": lost_workers, "hung": hung, "recovered_s": recovered[0] if recovered else None,
               "final": final.get("kind"), "final_workers": final.get("workers")}
    verdict["met"] = (lost_workers == 1 and bool(recovered) and recovered[0] <= RECOVERY_TARGET_S
                      and final.get("kind") == "succeeded" and final.get("workers") == FINAL_WORKERS)
    return verdict


def run_once(chaos: str) -> dict:
    """One `make demo` in a fresh ELASTRAIN_HOME; its verdict (see `judge`) and wall seconds."""
    with tempfile.TemporaryDirectory(prefix="elastrain-demo-") as home:
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "elastrain", "run", "examples/demo.yaml", "--chaos", chaos],
                              cwd=REPO, env={**os.environ, "ELASTRAIN_HOME": home},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - began
        folders = RunFolder.all(Path(home))
        if done.returncode != 0 or not folders:
            return {"met": False, "exit_code": done.returncode, "error": done.stderr.strip()[-300:], "wall_s": wall}
        return {**judge(folders[0].read_events()), "wall_s": round(wall, 1)}


@contextlib.contextmanager
def busy(processes: int):
    """`processes` processes that keep a core busy each, while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="demo runs, one after the other")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the demo")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    options = parser.parse_args()
    chaos = demo_chaos()
    runs = []
    with busy(options.load):
        for index in range(options.runs):
            verdict = run_once(chaos)
            runs.append(verdict)
            print(f"run {index + 1}/{options.runs}: {verdict}", flush=True)
    recoveries = sorted(r["recovered_s"] for r in runs if r.get("recovered_s") is not None)
    report("demo", {"runs": options.runs, "load": options.load, "met": sum(r["met"] for r in runs),
                    "recovered_s_max": recoveries[-1] if recoveries else None,
                    "recovered_s_median": recoveries[len(recoveries) // 2] if recoveries else None,
                    "target": {"lost": 1, "recovered_s": RECOVERY_TARGET_S, "final_workers": FINAL_WORKERS},
                    "per_run": runs}, options.save)


if __name__ == "__main__":
    main()
