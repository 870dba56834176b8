"""The peer of `elastrain prepare` (issue 30): the same preparation of `bench.mixed_table`'s CSV in
PySpark local mode, as a data engineer writes it: an ML `Pipeline` of `Imputer` (x0's blanks take
the mean), `StringIndexer` (blanks and unseen levels kept as a level of their own) +
`OneHotEncoder`, `VectorAssembler` + `StandardScaler` (mean and standard deviation), fitted on the
table and applied to it, written as Parquet. The text column is left out, as on elastrain's side of
the comparison. Spark caches nothing (each fit stage reads the CSV again) unless `--cache`.

Runs in a process of its own with PySpark on its path (`run` installs it into .spark-lib/ from
bench/requirements-spark.txt when missing); needs Java 17. Prints one JSON line: the rows, the
seconds the pipeline's fit and write took (the JVM's start excluded), Spark's version.

    python -m bench.spark_prepare 'CSV_GLOB' OUT_FOLDER [--cores 2] [--cache]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import common, mixed_table

REPOSITORY = Path(__file__).resolve().parents[1]
LIBRARY = REPOSITORY / ".spark-lib"
REQUIREMENTS = REPOSITORY / "bench" / "requirements-spark.txt"
# local mode runs everything in the driver's JVM: room for a cached table (the machine has 23 GB)
DRIVER_MEMORY = "8g"


def missing() -> str | None:
    """Why the peer cannot run here (no Java), or None."""
    if shutil.which("java") is None:
        return "no Java runtime (apt-get install openjdk-17-jre-headless)"
    return None


def run(pattern: str, out: Path, cores: int, cache: bool = False) -> dict:
    """The peer's figures (see the module's docstring) and its processes' peak RSS (MB, the JVM's
    and the Python driver's), run in a fresh process; PySpark installed first when missing. A run
    that failed gives `error` (its last lines; the whole stderr in OUT.log).

    Raises:
        SystemExit: no Java.
    """
    if reason := missing():
        raise SystemExit(f"the PySpark peer cannot run: {reason}")
    if not (LIBRARY / "pyspark").exists():
        print(f"installing PySpark into {LIBRARY} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(LIBRARY),
                        "-r", str(REQUIREMENTS)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIBRARY), str(REPOSITORY)]),
           "PYSPARK_PYTHON": sys.executable}
    done, peak_mb = common.run_measured([sys.executable, "-m", "bench.spark_prepare", pattern, str(out), "--cores",
                                         str(cores), *(["--cache"] if cache else [])], env, 7200, cwd=REPOSITORY)
    if done.returncode != 0:
        Path(f"{out}.log").write_text(done.stderr)
        causes = [line for line in done.stderr.splitlines() if "Exception" in line or "Error" in line]
        return {"error": " | ".join(causes[-3:])[-1000:] or done.stderr[-1000:], "cache": cache,
                "peak_rss_mb": peak_mb}
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"peak_rss_mb": peak_mb}


def pipeline():
    """The Spark ML pipeline (unfitted) over the mixed table's columns; its output column is `features`."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    categorical = list(mixed_table.CATEGORICAL)
    numbers = [f"{name}_filled" if name == mixed_table.BLANK_NUMERIC else name for name in mixed_table.NUMERIC]
    return Pipeline(stages=[
        Imputer(inputCols=[mixed_table.BLANK_NUMERIC], outputCols=[f"{mixed_table.BLANK_NUMERIC}_filled"],
                strategy="mean"),
        StringIndexer(inputCols=categorical, outputCols=[f"{name}_index" for name in categorical],
                      handleInvalid="keep", stringOrderType="alphabetAsc"),
        OneHotEncoder(inputCols=[f"{name}_index" for name in categorical],
                      outputCols=[f"{name}_onehot" for name in categorical], dropLast=False),
        VectorAssembler(inputCols=numbers, outputCol="numbers"),
        StandardScaler(inputCol="numbers", outputCol="scaled", withMean=True, withStd=True),
        VectorAssembler(inputCols=["scaled", *(f"{name}_onehot" for name in categorical)], outputCol="features"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pattern", help="the CSV parts, a glob")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cores", type=int, default=2, help="local[N]: Spark's task slots (default 2)")
    parser.add_argument("--cache", action="store_true", help="persist the parsed table (memory, then disk)")
    args = parser.parse_args()
    import pyspark
    from pyspark import StorageLevel
    from pyspark.sql import SparkSession
    from pyspark.sql import types as T

    spark = (SparkSession.builder.master(f"local[{args.cores}]").appName("bench-prepare")
             .config("spark.driver.memory", DRIVER_MEMORY).config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(2 * args.cores)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark_types = {"double": T.DoubleType(), "string": T.StringType(), "int64": T.LongType()}
    schema = T.StructType([T.StructField(field.name, spark_types[str(field.type)])
                           for field in mixed_table.table(1, 0, text=True).schema])
    table = spark.read.csv(args.pattern, header=True, schema=schema).drop(mixed_table.TEXT)
    if args.cache:
        table = table.persist(StorageLevel.MEMORY_AND_DISK)
    began = time.perf_counter()
    model = pipeline().fit(table)
    fitted = time.perf_counter()
    model.transform(table).select("features", "label").write.mode("overwrite").parquet(str(args.out))
    done = time.perf_counter()
    rows = spark.read.parquet(str(args.out)).count()
    spark.stop()
    print(json.dumps({"rows": rows, "fit_s": round(fitted - began, 3), "write_s": round(done - fitted, 3),
                      "seconds": round(done - began, 3), "spark": pyspark.__version__, "cores": args.cores,
                      "cache": args.cache}))


if __name__ == "__main__":
    main()
