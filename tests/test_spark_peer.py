"""bench.prepare's peer does the same work: PySpark local mode's pipeline (`bench.spark_prepare`,
a real JVM) writes the features scikit-learn's `ColumnTransformer` computes, but for Spark's
standard deviation, the sample one (n - 1)."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from bench import mixed_table, spark_prepare


def dense(vectors) -> np.ndarray:
    """Spark ML vectors as Parquet stores them (type 0 sparse: size, indices, values; 1 dense: values)."""
    rows = []
    for vector in vectors:
        if vector["type"] == 1:
            rows.append(vector["values"])
        else:
            row = np.zeros(vector["size"])
            row[vector["indices"]] = vector["values"]
            rows.append(row)
    return np.asarray(rows, np.float64)


@pytest.mark.slow   # PySpark's install (once, about 40 s) and a JVM's start
@pytest.mark.skipif(spark_prepare.missing() is not None, reason=f"{spark_prepare.missing()}: the peer needs Java")
def test_the_spark_pipeline_computes_what_scikit_learn_does(tmp_path):
    table = mixed_table.table(3_000, seed=7, text=True)
    raw = tmp_path / "raw"
    raw.mkdir()
    pcsv.write_csv(table, raw / "part-0.csv")
    figures = spark_prepare.run(f"{raw}/part-*.csv", tmp_path / "spark", cores=2)   # installs PySpark if missing
    assert "error" not in figures, figures
    assert figures["rows"] == 3_000 and figures["seconds"] > 0 and figures["peak_rss_mb"] > 100   # a JVM ran
    written = pq.read_table(tmp_path / "spark")
    got = dense(written.column("features").to_pylist())
    frame = table.to_pandas()
    expected = mixed_table.sklearn_reference().fit_transform(frame)
    numeric = len(mixed_table.NUMERIC)
    expected[:, :numeric] *= np.sqrt((len(frame) - 1) / len(frame))   # Spark: the sample standard deviation
    order = np.lexsort(got.T[::-1])   # Spark writes its partitions in any order: compare sorted rows
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[order], expected[np.lexsort(expected.T[::-1])], atol=1e-9)
