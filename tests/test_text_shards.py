"""CSV (plain and gzipped) and JSON Lines shards streamed like Parquet shards: the same rows give
the same manifest, a job learns from them, and a shard with other columns is one line naming it."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench.higgs_like import rows, write_shards
from elastrain.data.streaming import ShardedSource, describe_shards
from elastrain.elastic.job import run_job
from elastrain.errors import UserError
from elastrain.spec import parse_spec

ROWS, SHARD_ROWS = 3000, 1000   # 3 shards


def spec_for(source: str, target: str = "label", epochs: int = 2):
    return parse_spec(f"""
name: text-shards
data: {{source: '{source}', target: {target}, shuffle_window: 1500}}
model: {{kind: mlp, hidden: [16]}}
train: {{optimizer: adam, lr: 0.01, batch_size: 100, epochs: {epochs}, seed: 1}}
""")


def csv_text(x: np.ndarray, y: np.ndarray) -> str:
    # '%.9g' prints a float32 so that it reads back to the same float32.
    header = ",".join([*(f"f{j}" for j in range(x.shape[1])), "label"])
    lines = [",".join([*(f"{v:.9g}" for v in row), f"{int(t)}"]) for row, t in zip(x, y, strict=True)]
    return "\n".join([header, *lines]) + "\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The same rows as Parquet shards, CSV shards (the middle one gzipped) and JSON Lines shards
    whose label is a word."""
    root = tmp_path_factory.mktemp("text-shards")
    write_shards(root / "parquet", ROWS, SHARD_ROWS, 500, seed=0)
    (root / "csv").mkdir()
    (root / "jsonl").mkdir()
    for index, start in enumerate(range(0, ROWS, SHARD_ROWS)):
        x, y = rows(start, SHARD_ROWS, seed=0)
        text = csv_text(x, y)
        if index == 1:
            (root / "csv" / f"part-{index}.csv.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (root / "csv" / f"part-{index}.csv").write_text(text)
        lines = [json.dumps({**{f"f{j}": float(v) for j, v in enumerate(row)}, "label": "yes" if t else "no"})
                 for row, t in zip(x, y, strict=True)]
        (root / "jsonl" / f"part-{index}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_csv_shards_plain_and_gzipped_give_the_manifest_of_the_same_rows_in_parquet(folder):
    from_parquet = ShardedSource(spec_for(f"parquet:{folder}/parquet/part-*.parquet")).manifest
    from_csv = ShardedSource(spec_for(f"csv:{folder}/csv/part-*.csv*")).manifest
    assert from_csv.pieces == [[SHARD_ROWS]] * 3 and sum(map(sum, from_parquet.pieces)) == ROWS
    assert from_csv.features == from_parquet.features and from_csv.classes == from_parquet.classes
    assert sum(map(sum, from_csv.train)) == sum(map(sum, from_parquet.train))   # the split hashes row ids
    assert from_csv.class_counts == from_parquet.class_counts
    np.testing.assert_allclose(from_csv.center, from_parquet.center, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(from_csv.scale, from_parquet.scale, rtol=1e-6)
    assert "3 csv shards, 3,000 rows in 3 pieces" in describe_shards(spec_for(f"csv:{folder}/csv/part-*").data)


def test_a_job_learns_from_json_lines_shards_with_words_for_classes(folder, elastrain_home):
    spec = spec_for(f"jsonl:{folder}/jsonl/part-*.jsonl", epochs=4)
    result = run_job(spec, elastrain_home)
    assert result.status == "succeeded", result.message
    assert result.metrics["val_accuracy"] > 0.7
    assert ShardedSource(spec_for(f"jsonl:{folder}/jsonl/part-*.jsonl")).manifest.classes == ["no", "yes"]


def test_a_text_shard_with_other_columns_is_one_line_naming_it(folder, tmp_path):
    for name in ("part-0.csv", "part-1.csv"):
        (tmp_path / name).write_text((folder / "csv" / "part-0.csv").read_text())
    broken = tmp_path / "part-2.csv"
    broken.write_text((folder / "csv" / "part-0.csv").read_text().replace("f3,", "g3,", 1))
    with pytest.raises(UserError) as caught:
        ShardedSource(spec_for(f"csv:{tmp_path}/part-*.csv"))
    assert caught.value.where == str(broken) and "f3" in caught.value.line() and "g3" in caught.value.line()
