"""What a streamed step costs a worker beyond the in-memory one, measured apart in one process
(issue 29's throughput gap): decoding a piece (reading its Parquet row group, encoding the
targets, the validation split's hash) per row, and assembling a member's share of a global batch
from pieces already decoded (`ShardedSource.share`, rank 0 of 2: gathering its rows and
standardizing them) per step. Both run on the training
process's CPUs in a job, the decode on background threads.

    python -m bench.stream_costs [--data /tmp/elastrain-bench-streaming] [--gb 1] [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import common
from bench.streaming import BATCH, data_set, spec

PIECES = 12   # pieces decoded, spread over the data set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-streaming",
                        help="where bench.streaming's data sets are written once and reused")
    parser.add_argument("--gb", type=float, default=1.0, help="the data set's size (default 1)")
    parser.add_argument("--steps", type=int, default=100, help="shares assembled (default 100)")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    from elastrain.data.streaming import ShardedSource
    from elastrain.spec import validate_spec

    args.data.mkdir(parents=True, exist_ok=True)
    folder = data_set(args.data, args.gb)
    source = ShardedSource(validate_spec(spec(f"parquet:{folder}/part-*.parquet", 2, args.steps), "bench"))
    features = list(source.manifest.features)
    chosen = range(0, len(source.pieces), max(1, len(source.pieces) // PIECES))[:PIECES]
    began, rows = time.perf_counter(), 0
    for piece in chosen:
        rows += len(source.pieces.read(piece, features, source.target)[1])
    read_s = time.perf_counter() - began
    began = time.perf_counter()
    for piece in chosen:
        source._decode(piece)
    decode_s = time.perf_counter() - began
    step_s = []
    for step in range(args.steps):
        position = step * BATCH
        source.share(0, 0, position, BATCH, 0, 2)   # asks for the pieces; the next call finds them decoded
        for future in list(source._cache.values()):
            future.result()
        began = time.perf_counter()
        source.share(0, 0, position, BATCH, 0, 2)
        step_s.append(time.perf_counter() - began)
    decode_us = decode_s / rows * 1e6
    share_ms = statistics.median(step_s) * 1e3
    common.report("stream_costs", {
        "read_us_per_row": round(read_s / rows * 1e6, 3),
        "decode_us_per_row": round(decode_us, 3),   # read + targets encoded + split hash
        "share_ms_per_step": round(share_ms, 3),     # median; rank 0 of 2, global batch BATCH
        "per_worker_step_ms": round(decode_us * BATCH / 2 / 1e3 + share_ms, 3),   # decode of its rows + share
        "rows_decoded": rows, "global_batch": BATCH, "data": str(folder),
    }, args.save)


if __name__ == "__main__":
    main()
