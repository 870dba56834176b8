"""Run a job as a driver on the Ray cluster at RAY_ADDRESS and print its result as one JSON line
after `RESULT ` (Ray may print notices of its own on standard output):
`python -m tests.netns_job SPEC HOME TRACE_DIR` (`-`: no trace), run inside a namespace host of the cluster (a
Ray driver must run on a node of its cluster)."""

import json
import sys
from pathlib import Path

from elastrain.elastic import RunOptions, run_job
from elastrain.spec import load_spec

if __name__ == "__main__":
    spec_file, home, trace_dir = sys.argv[1:4]
    options = RunOptions(trace_dir=None if trace_dir == "-" else trace_dir)
    result = run_job(load_spec(Path(spec_file)), Path(home), options=options)
    print("RESULT " + json.dumps(result.to_dict()), flush=True)
