"""CLI start-up: wall seconds from launching `elastrain COMMAND` to its exit, for commands that
do not train (they import none of torch, Ray, scikit-learn, pandas, pyarrow). Target < 1 s.

Each command runs against an empty ELASTRAIN_HOME (`jobs` lists nothing, `status` of an unknown
job fails with its one line: the start-up is what is measured). Median of --repetitions runs.
Usage: python -m bench.cli_startup [--repetitions 5] [--save]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["jobs"], ["status", "nope"], ["scale", "nope", "-w", "2"],
            ["validate", "examples/demo.yaml"])
TARGET_S = 1.0


def seconds(command: list[str], home: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "elastrain", *command], cwd=REPO, capture_output=True, timeout=60,
                   env={**os.environ, "ELASTRAIN_HOME": home})
    return time.perf_counter() - began


def main() -> None:
    args = common.arguments(__doc__, steps=0, repetitions=5)
    figures = {}
    with tempfile.TemporaryDirectory() as home:
        for command in COMMANDS:
            times = [seconds(command, home) for _ in range(args.repetitions)]
            figures[" ".join(command[:1])] = round(common.median(times), 3)
            print(f"elastrain {' '.join(command)}: {figures[' '.join(command[:1])]:.3f} s", file=sys.stderr)
    common.report("cli_startup", {"seconds": figures, "slowest_s": max(figures.values()), "target_s": TARGET_S,
                                  "repetitions": args.repetitions}, args.save)


if __name__ == "__main__":
    main()
