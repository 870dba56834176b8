"""`elastrain prepare` against the reference a user trusts (issue 30): on a seeded mixed table
(`bench.mixed_table`, CSV parts), the prepared training and validation features against
pandas + scikit-learn's `ColumnTransformer` (mean-imputed, standardized numbers; one-hot
categories) fitted on the same training rows, with 1 and with 3 Ray Data workers, and whether the
two runs wrote the same shards; the pass's rows/s. Then the text models: `bench.sms_spam` (English,
against TF-IDF + logistic regression) and `bench.cold_zh` (Chinese), in the same run.

Not measured yet (null in the report): the PySpark comparison and the 1 GB / 5 GB memory run.

    python -m bench.prepare [--megabytes 200] [--data /tmp/elastrain-bench-prepare] [--no-text] [--save]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import cold_zh, common, mixed_table, sms_spam

# COLDetector, BERT fine-tuned on COLD: 81 % accuracy on its test set (Deng et al., arXiv 2201.06025v1,
# abstract), for context beside the cold_* figures.
COLDETECTOR_ACCURACY = 0.81


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=200.0, help="the table's size as CSV (default 200)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "elastrain-bench-prepare",
                        help="where the table is written once and reused, and the shards written")
    parser.add_argument("--no-text", action="store_true", help="leave out the text models (bench.sms_spam, "
                        "bench.cold_zh): a few minutes")
    parser.add_argument("--save", action="store_true", help="also write the report to bench/results/")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from elastrain.prep.fit import validation_rows
    from elastrain.prep.run import prepare
    from elastrain.spec import validate_spec

    raw = args.data / f"mixed-{args.megabytes:g}mb"
    paths = mixed_table.write_csv(raw, args.megabytes)
    common.start_ray()
    spec = mixed_table.spec(f"csv:{raw}/part-*.csv")
    runs = {}
    for workers in (1, 3):
        began = time.perf_counter()
        manifest, _ = prepare(validate_spec(spec, "bench"), args.data / f"out-{workers}", workers)
        runs[workers] = (time.perf_counter() - began, manifest)
        print(f"{workers} worker(s): {manifest.rows_in:,} rows in {runs[workers][0]:.1f} s "
              f"(fit {manifest.fit_s} s, write {manifest.write_s} s)", file=sys.stderr)
    table = pa.concat_tables([pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
        column_types={name: pa.string() for name in mixed_table.CATEGORICAL}, strings_can_be_null=True))
        for path in paths])
    validation = validation_rows(table, [*mixed_table.NUMERIC, *mixed_table.CATEGORICAL, "label"], 0, 0.2)
    frame = table.to_pandas()
    reference = mixed_table.sklearn_reference().fit(frame[~validation])
    expected = {"train": reference.transform(frame[~validation]), "validation": reference.transform(frame[validation])}
    diffs, same = {}, True
    shards = {}
    for workers, (_, manifest) in runs.items():
        folder = args.data / f"out-{workers}"
        for split in ("train", "validation"):
            prepared = pa.concat_tables([pq.read_table(folder / name) for name in getattr(manifest, split)])
            x = np.column_stack([prepared.column(f"f{j}").to_numpy() for j in range(prepared.num_columns - 1)])
            shards[workers, split] = x
            diffs[workers, split] = float(np.abs(x - expected[split]).max())
    for split in ("train", "validation"):
        same = same and np.array_equal(shards[1, split], shards[3, split])
    rows = runs[1][1].rows_in
    text: dict = {}
    if not args.no_text:
        with tempfile.TemporaryDirectory() as folder:
            text |= sms_spam.measure(Path(folder), [0, 1, 2], epochs=10)
        with tempfile.TemporaryDirectory() as folder:
            text |= cold_zh.measure(Path(folder), epochs=5)
    common.report("prepare", {
        "max_abs_diff_vs_sklearn": max(diffs.values()),
        "max_abs_diff_by_workers": {str(w): max(d for (k, _), d in diffs.items() if k == w) for w in runs},
        "same_shards_1_and_3_workers": same,
        "rows": rows, "megabytes": args.megabytes,
        "rows_per_s": {str(w): round(rows / seconds) for w, (seconds, _) in runs.items()},
        "ratio_to_spark": None, "rss_ratio_5g_to_1g": None, "sms_spam_f1": None, "sms_baseline_f1": None,
        "cold_test_accuracy": None, "cold_test_macro_f1": None, "cold_baseline_accuracy": None,
        **text, "cold_published_accuracy": COLDETECTOR_ACCURACY,
    }, args.save)


if __name__ == "__main__":
    main()
