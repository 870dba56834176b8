"""`elastrain prepare` against the references a user trusts and the engine a data engineer reaches
for (issue 30), all in one run:

- equal to the reference: on a seeded mixed table (`bench.mixed_table`, 200 MB of CSV parts:
  numbers, categories with blanks, a text column), the prepared training and validation features
  against pandas + scikit-learn's `ColumnTransformer` (mean-imputed, standardized numbers; one-hot
  categories) fitted on the same training rows, and the text column's ids against a BPE tokenizer
  trained on the same training texts in one process (`tokenizers`), with 1 and with 3 Ray Data
  workers, and whether the two runs wrote the same shards;
- speed and memory: the same table at 1 GB and 5 GB (text column skipped by both sides), prepared
  by `elastrain prepare --workers CORES` in a process of its own, against PySpark local[CORES]
  running the same pipeline (`bench.spark_prepare`) on the 5 GB table, with and without caching
  the parsed table (the faster is the peer): rows/s each (the pipeline's time, the engine's start
  excluded) and their ratio; the peak RSS of each process of ours
  (driver, Ray's processes and workers) on the 5 GB table against the 1 GB one;
- text: `bench.sms_spam` (English, against TF-IDF + logistic regression) and `bench.cold_zh`
  (Chinese).

    python -m bench.prepare [--megabytes 200] [--gigabytes 1 5] [--cores 2] [--data /tmp/elastrain-bench-prepare]
                            [--no-text] [--no-spark] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench import cold_zh, common, mixed_table, sms_spam, spark_prepare

# COLDetector, BERT fine-tuned on COLD: 81 % accuracy on its test set (Deng et al., arXiv 2201.06025v1,
# abstract), for context beside the cold_* figures.
COLDETECTOR_ACCURACY = 0.81


def equality(data: Path, megabytes: float) -> dict:
    """The equality figures (see the module's docstring) on the `megabytes` table; an embedded Ray must be up."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from elastrain.prep.fit import validation_rows
    from elastrain.prep.run import prepare
    from elastrain.spec import validate_spec

    raw = data / f"mixed-{megabytes:g}mb"
    paths = mixed_table.write_csv(raw, megabytes)
    spec = mixed_table.spec(f"csv:{raw}/part-*.csv", text="text")
    runs = {}
    for workers in (1, 3):
        began = time.perf_counter()
        manifest, _ = prepare(validate_spec(spec, "bench"), data / f"out-{workers}", workers)
        runs[workers] = (time.perf_counter() - began, manifest)
        print(f"{workers} worker(s): {manifest.rows_in:,} rows in {runs[workers][0]:.1f} s "
              f"(fit {manifest.fit_s} s, write {manifest.write_s} s)", file=sys.stderr)
    text_columns = {mixed_table.TEXT: pa.string(), **{name: pa.string() for name in mixed_table.CATEGORICAL}}
    table = pa.concat_tables([pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
        column_types=text_columns, strings_can_be_null=True)) for path in paths])
    hashed = [*mixed_table.NUMERIC, *mixed_table.CATEGORICAL, mixed_table.TEXT, "label"]
    validation = validation_rows(table, hashed, 0, 0.2)
    frame = table.to_pandas()
    reference = mixed_table.sklearn_reference().fit(frame[~validation])
    notes = np.asarray(table.column(mixed_table.TEXT).to_pylist(), dtype=object)
    ids = mixed_table.tokenizer_reference(notes[~validation].tolist(), notes[validation].tolist())
    expected = {"train": np.hstack([reference.transform(frame[~validation]), ids[0]]),
                "validation": np.hstack([reference.transform(frame[validation]), ids[1]])}
    diffs, shards = {}, {}
    for workers, (_, manifest) in runs.items():
        folder = data / f"out-{workers}"
        for split in ("train", "validation"):
            prepared = pa.concat_tables([pq.read_table(folder / name) for name in getattr(manifest, split)])
            x = np.column_stack([prepared.column(f"f{j}").to_numpy() for j in range(prepared.num_columns - 1)])
            shards[workers, split] = x
            diffs[workers, split] = float(np.abs(x - expected[split]).max())
    rows = runs[1][1].rows_in
    return {"max_abs_diff_vs_sklearn": max(diffs.values()),
            "max_abs_diff_by_workers": {str(w): max(d for (k, _), d in diffs.items() if k == w) for w in runs},
            "same_shards_1_and_3_workers": all(np.array_equal(shards[1, split], shards[3, split])
                                               for split in ("train", "validation")),
            "rows": rows, "megabytes": megabytes,
            "rows_per_s": {str(w): round(rows / seconds) for w, (seconds, _) in runs.items()}}


def ours(data: Path, gigabytes: float, cores: int) -> dict:
    """`elastrain prepare --workers CORES` of the `gigabytes` table (text skipped) in a process of its
    own with its own Ray: rows/s of its pipeline, wall seconds, each process's peak RSS (MB)."""
    raw = data / f"mixed-{gigabytes:g}gb"
    mixed_table.write_csv(raw, gigabytes * 1000)
    folder = data / f"ours-{gigabytes:g}gb"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "job.yaml"
    spec_file.write_text(yaml.safe_dump(mixed_table.spec(f"csv:{raw}/part-*.csv", text="skip")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"ELASTRAIN_HOME": str(folder / "home")}
    began = time.perf_counter()
    done, peak_mb = common.run_measured([sys.executable, "-m", "elastrain", "prepare", str(spec_file), "--out",
                                         str(folder / "out"), "--workers", str(cores), "--json"], env, 7200)
    if done.returncode != 0:
        raise SystemExit(f"elastrain prepare failed: {done.stderr[-3000:]}")
    manifest = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = manifest["fit_s"] + manifest["write_s"]
    figures = {"rows": manifest["rows_in"], "seconds": round(seconds, 1),
               "wall_s": round(time.perf_counter() - began, 1), "rows_per_s": round(manifest["rows_in"] / seconds),
               "peak_rss_mb": peak_mb}
    print(f"elastrain prepare, {gigabytes:g} GB: {figures}", file=sys.stderr)
    return figures


def speed_and_memory(data: Path, gigabytes: list[float], cores: int) -> dict:
    """The speed and memory figures (see the module's docstring): ours on each size, the peer on the largest."""
    runs = {size: ours(data, size, cores) for size in gigabytes}
    small, large = min(gigabytes), max(gigabytes)
    raw = data / f"mixed-{large:g}gb"
    peers = []
    for cache in (False, True):   # the peer at its best: with and without caching the parsed table
        out = data / f"spark-{'cached' if cache else 'plain'}"
        peers.append(spark_prepare.run(f"{raw}/part-*.csv", out, cores, cache))
        shutil.rmtree(out, ignore_errors=True)
        if "error" not in peers[-1]:
            peers[-1]["rows_per_s"] = round(peers[-1]["rows"] / peers[-1]["seconds"])
        print(f"PySpark local[{cores}], {large:g} GB: {peers[-1]}", file=sys.stderr)
    best = max((peer for peer in peers if "error" not in peer), key=lambda peer: peer["rows_per_s"])
    return {"ratio_to_spark": round(runs[large]["rows_per_s"] / best["rows_per_s"], 3),
            "rss_ratio_5g_to_1g": round(runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"], 3),
            "ours_by_gigabytes": {f"{size:g}": figures for size, figures in runs.items()},
            "spark": best, "spark_runs": peers, "cores": cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=200.0, help="the equality table's size as CSV (default 200)")
    parser.add_argument("--gigabytes", type=float, nargs=2, default=[1.0, 5.0],
                        help="the two sizes of the speed and memory tables (default 1 5)")
    parser.add_argument("--cores", type=int, default=2, help="Ray Data workers, and Spark's local[N] (default 2)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-prepare",
                        help="where the tables are written once and reused, and the shards written")
    parser.add_argument("--no-text", action="store_true", help="leave out the text models (bench.sms_spam, "
                        "bench.cold_zh): a few minutes")
    parser.add_argument("--no-spark", action="store_true", help="leave out the speed and memory comparison")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    figures: dict = {"ratio_to_spark": None, "rss_ratio_5g_to_1g": None}
    if not args.no_spark:   # first, in processes of their own, before this process starts its Ray
        figures |= speed_and_memory(args.data, args.gigabytes, args.cores)
    common.start_ray()
    figures = equality(args.data, args.megabytes) | figures
    if not args.no_text:
        with tempfile.TemporaryDirectory() as folder:
            figures |= sms_spam.measure(Path(folder), [0, 1, 2], epochs=10)
        with tempfile.TemporaryDirectory() as folder:
            figures |= cold_zh.measure(Path(folder), epochs=5)
    common.report("prepare", figures | {"cold_published_accuracy": COLDETECTOR_ACCURACY}, args.save)


if __name__ == "__main__":
    main()
