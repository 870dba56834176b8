"""Data read wrong without a word (issue 27, findings 1-8): each test names the kind of fault it guards.

`validate` and `run` read tables with one reader (elastrain.data.tables), so most tests check both:
`validate` through the CLI, training's reading through `prepare_dataset`.
"""

import bz2
import gzip
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet
import pytest

from elastrain.data import prepare_dataset, read_prediction_input
from elastrain.errors import UserError
from elastrain.spec import load_spec


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def spec_file(folder: Path, source: str, target: str = "label", extra: str = "") -> Path:
    return write(folder / "job.yaml", f"data: {{source: '{source}', target: {target}{extra}}}\n"
                                      "model: {kind: logistic}\ntrain: {lr: 0.1, epochs: 5}\n")


def prepared(folder: Path, source: str, target: str = "label", extra: str = ""):
    return prepare_dataset(load_spec(spec_file(folder, source, target, extra)))


def refusal(folder: Path, source: str, target: str = "label", extra: str = "") -> str:
    with pytest.raises(UserError) as refused:
        prepared(folder, source, target, extra)
    return refused.value.line()


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def sorted_by_label(n: int = 120) -> pd.DataFrame:
    """Two noisy features and a label; rows sorted by label, so the row number alone predicts it."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["label"] = np.where(frame.a + rng.normal(scale=2, size=n) > 0, "yes", "no")
    return frame.sort_values("label").reset_index(drop=True)


# 1. The row index pandas' to_csv() writes.

def test_a_pandas_index_column_is_dropped_with_a_warning_not_trained_on(cli, tmp_path):
    """Kind: the row index written by DataFrame.to_csv() (an empty first header, or `Unnamed: 0` once
    read and written again) trained on as a feature; it is dropped with a warning."""
    frame = sorted_by_label()
    frame.to_csv(tmp_path / "indexed.csv")
    pd.read_csv(tmp_path / "indexed.csv").to_csv(tmp_path / "unnamed.csv", index=False)
    halves = [frame.head(60).reset_index(drop=True), frame.tail(60).reset_index(drop=True)]
    pd.concat(halves).to_csv(tmp_path / "concat.csv", sep=";")   # the index repeats: 0..59 twice
    for name, header in (("indexed.csv", "''"), ("unnamed.csv", "'Unnamed: 0'"), ("concat.csv", "''")):
        data = prepared(tmp_path, f"csv:{name}")
        assert data.preprocessor.columns == ["a", "b"], name
        assert any(header in w and "to_csv()" in w for w in data.warnings), data.warnings
        code, _, err = cli("validate", spec_file(tmp_path, f"csv:{name}"))
        assert code == 0 and "warning:" in err and "to_csv()" in err, err


def test_predictions_on_index_free_input_agree_with_the_indexed_training_file(cli, tmp_path):
    """Kind: the row index written by to_csv() trained on: predictions then depended on the row
    numbers of the input. Trained on the indexed file, the model predicts the same on input with
    and without the index, and `run` tells the user what it dropped."""
    frame = sorted_by_label()
    frame.to_csv(tmp_path / "train.csv")
    code, out, err = cli("run", spec_file(tmp_path, "csv:train.csv"), "--json")
    assert code == 0 and "to_csv()" in err, err
    model = last_json(out)["model_path"]
    features = frame[["a", "b"]].iloc[::-1].reset_index(drop=True)   # other row numbers than in training
    features.to_csv(tmp_path / "plain.csv", index=False)
    features.to_csv(tmp_path / "with_index.csv")
    answers = [last_json(cli("predict", model, "--input", tmp_path / name, "--json")[1])["predictions"]
               for name in ("plain.csv", "with_index.csv")]
    assert answers[0] == answers[1] and len(answers[0]) == len(frame)


@pytest.mark.usefixtures("ray_address")
def test_a_job_on_ray_workers_says_what_the_reader_dropped(cli, tmp_path, elastrain_home):
    """Kind: the row index written by to_csv() dropped without a word: a job whose driver runs on
    Ray says it too, on the terminal and in the run's log."""
    sorted_by_label().to_csv(tmp_path / "train.csv")
    spec = write(tmp_path / "job.yaml", "data: {source: 'csv:train.csv', target: label}\nmodel: {kind: logistic}\n"
                                        "train: {epochs: 1}\nresources: {workers: {min: 2, max: 2}}\n")
    code, out, err = cli("run", spec, "--json")
    assert code == 0 and "to_csv()" in err, err
    assert "to_csv()" in (Path(last_json(out)["run_dir"]) / "job.log").read_text()


def test_an_unnamed_column_that_is_not_an_index_is_refused_and_an_empty_one_ignored(tmp_path):
    """Kind: columns without a name: one holding values that are not a row index is refused by
    position; an empty one (a separator closing the header and every row) is ignored with a warning."""
    write(tmp_path / "blank.csv", "a,,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    line = refusal(tmp_path, "csv:blank.csv")
    assert "column 2 has no name" in line
    write(tmp_path / "closed.csv", "a,b,label,\n" + "".join(f"{i},{i % 3},{i % 2},\n" for i in range(40)))
    data = prepared(tmp_path, "csv:closed.csv")
    assert data.preprocessor.columns == ["a", "b"] and any("column 4 has no name" in w for w in data.warnings)


# 2. Numbers written with thousands separators or units.

def test_numbers_with_thousands_separators_are_read_as_numbers(tmp_path):
    """Kind: numbers with thousands separators (`1,483.62`, `1.483,62`) read as one category per row."""
    values = [1000 + 137.25 * i for i in range(60)]
    grouped = [f'"{v:,.2f}"' for v in values]
    write(tmp_path / "d.csv", "price,label\n" + "".join(f"{g},{i % 2}\n" for i, g in enumerate(grouped)))
    european = [f"{v:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".") for v in values]
    write(tmp_path / "eu.csv", "price;label\n" + "".join(f"{g};{i % 2}\n" for i, g in enumerate(european)))
    spaced = [g.replace(".", "\u202f") for g in european]   # French: 1 483,62 with a narrow space
    write(tmp_path / "fr.csv", "price;label\n" + "".join(f"{g};{i % 2}\n" for i, g in enumerate(spaced)))
    for name in ("d.csv", "eu.csv", "fr.csv"):
        data = prepared(tmp_path, f"csv:{name}", extra=", scaling: none, validation_fraction: 0.5")
        assert data.preprocessor.feature_names == ["price"], name
        read = sorted(np.concatenate([data.x_train, data.x_val])[:, 0].tolist())
        assert read == pytest.approx(values), name
    new = write(tmp_path / "new.csv", 'price\n"98,765.25"\n"1,000,000"\n')   # values training never saw
    assert read_prediction_input(new, data.preprocessor)[:, 0].tolist() == [98765.25, 1e6]


@pytest.mark.parametrize("written", ["{}%", "${}", "{} kg", "\u20ac{}", "{} \u20ac"])
def test_numbers_with_units_are_refused_naming_the_column(cli, tmp_path, written):
    """Kind: numbers with units or symbols (`10%`, `$5`) silently turned into one category per row."""
    write(tmp_path / "d.csv", "x,rate,label\n" + "".join(f"{i},{written.format(i * 3)},{i % 2}\n" for i in range(60)))
    line = refusal(tmp_path, "csv:d.csv")
    assert "column 'rate'" in line and "unit" in line and "data.categorical" in line
    for command in ("validate", "run"):
        code, _, err = cli(command, spec_file(tmp_path, "csv:d.csv"))
        assert code == 2 and one_line(err) and "column 'rate'" in err, err


def test_a_categorical_column_with_a_category_per_row_warns(tmp_path):
    """Kind: a column taken for categories with (nearly) as many categories as rows (an id, free
    text), one-hot encoded without a word."""
    write(tmp_path / "d.csv", "x,name,label\n" + "".join(f"{i},user-{i},{i % 2}\n" for i in range(60)))
    data = prepared(tmp_path, "csv:d.csv")
    assert any("'name' has 60 categories in 60 rows" in w for w in data.warnings), data.warnings
    write(tmp_path / "few.csv", "x,color,label\n" + "".join(f"{i},c{i % 3},{i % 2}\n" for i in range(60)))
    assert prepared(tmp_path, "csv:few.csv").warnings == []


# 3. A header that names a column twice.

def test_a_duplicate_header_name_is_refused_naming_the_column(cli, tmp_path):
    """Kind: duplicate header names (`label,a,b,label`): pandas renamed the copy `label.1`, a copy of
    the target trained on as a feature. Refused, naming the column, by validate and run alike."""
    write(tmp_path / "d.csv", "label,a,b,label\n" + "".join(f"{i % 2},{i},{i * 2},{i % 2}\n" for i in range(40)))
    pyarrow.parquet.write_table(pyarrow.table([[1, 2], [3, 4], [0, 1]], names=["a", "a", "label"]),
                                tmp_path / "d.parquet")
    for source in ("csv:d.csv", "parquet:d.parquet"):
        column = "label" if source.startswith("csv") else "a"
        for command in ("validate", "run"):
            code, _, err = cli(command, spec_file(tmp_path, source))
            assert code == 2 and one_line(err), err
            assert f"names column '{column}' twice" in err and "label.1" not in err


# 4. Compressed and typed sources.

COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def semicolon_csv(n: int = 60) -> str:
    return "a;b;label\n" + "".join(f"{i},5;{i % 7},25;{'xy'[i % 2]}\n" for i in range(n))


@pytest.mark.parametrize("suffix", ["csv.gz", "csv.bz2", "csv.xz", "csv.zip", "csv.tar.gz", "csv"])
def test_a_compressed_csv_is_read_alike_by_validate_and_run(cli, tmp_path, suffix):
    """Kind: compressed CSV files (`.csv.gz` and the other compressions pandas knows; a gzip file
    named .csv) listed as binary garbage by validate and sniffed wrongly (separator ';' and decimal
    commas read as text categories): the reader decompresses before it sniffs, for validate and run."""
    text = semicolon_csv()
    write(tmp_path / "plain.csv", text)
    name = f"data.{suffix}"
    if suffix == "csv.zip":
        with zipfile.ZipFile(tmp_path / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("data.csv", text)
    elif suffix == "csv.tar.gz":
        with tarfile.open(tmp_path / name, "w:gz") as archive:
            archive.add(tmp_path / "plain.csv", arcname="data.csv")
    else:
        (tmp_path / name).write_bytes(COMPRESSORS.get(suffix.rpartition(".")[2], gzip.compress)(text.encode()))
    code, _, err = cli("validate", spec_file(tmp_path, f"csv:{name}"))
    assert code == 0 and "has 3 columns, the target 'label' among them" in err, err
    data = prepared(tmp_path, f"csv:{name}", extra=", scaling: none")
    plain = prepared(tmp_path, "csv:plain.csv", extra=", scaling: none")
    assert data.preprocessor.feature_names == ["a", "b"]
    assert np.array_equal(data.x_train, plain.x_train) and data.x_train[:, 0].max() % 1 == 0.5


def test_the_source_prefix_decides_the_format_not_the_suffix(cli, tmp_path):
    """Kind: `parquet:train.pq` read as CSV because of its suffix; the source's prefix decides."""
    frame = pd.DataFrame({"a": np.arange(40) * 0.5, "label": ["xy"[i % 2] for i in range(40)]})
    frame.to_parquet(tmp_path / "train.pq")
    frame.to_parquet(tmp_path / "train.csv")   # a Parquet file with a misleading suffix
    for name in ("train.pq", "train.csv"):
        code, _, err = cli("validate", spec_file(tmp_path, f"parquet:{name}"))
        assert code == 0 and "has 2 columns" in err, err
        data = prepared(tmp_path, f"parquet:{name}", extra=", scaling: none")
        assert data.preprocessor.columns == ["a"] and data.n_classes == 2
    code, out, err = cli("run", spec_file(tmp_path, "parquet:train.pq"), "--json")
    assert code == 0, err
    code, out, err = cli("predict", last_json(out)["model_path"], "--input", tmp_path / "train.pq", "--json")
    assert code == 0 and len(last_json(out)["predictions"]) == 40, err


# 5. A separator at the end of data rows.

@pytest.mark.parametrize("sep", [",", ";"])
def test_a_trailing_separator_on_data_rows_is_read_right_by_validate_and_run(cli, tmp_path, sep):
    """Kind: a trailing delimiter on data rows (one more field than the header): validate passed
    while run said the target was missing at data row 1. Both read the rows as written."""
    write(tmp_path / "d.csv", sep.join(["a", "b", "label"]) + "\n"
          + "".join(sep.join([str(i), str(i % 5), "xy"[i % 2]]) + sep + "\n" for i in range(40)))
    code, _, err = cli("validate", spec_file(tmp_path, "csv:d.csv"))
    assert code == 0 and "has 3 columns" in err, err
    data = prepared(tmp_path, "csv:d.csv", extra=", scaling: none")
    assert data.preprocessor.columns == ["a", "b"] and data.preprocessor.classes == ["x", "y"]
    rows = np.concatenate([data.x_train, data.x_val])
    assert sorted(rows[:, 0].tolist()) == list(range(40)) and set(rows[:, 1].tolist()) == set(range(5))
    code, _, err = cli("run", spec_file(tmp_path, "csv:d.csv"))
    assert code == 0, err


def test_a_row_with_a_value_past_the_header_is_refused_naming_its_line(cli, tmp_path):
    """Kind: a data row with more values than the header (not just a closing separator): refused by
    validate and run with its line, not read shifted."""
    rows = [f"{i},{i % 5},{'xy'[i % 2]}" for i in range(40)]
    rows[6] += ",9"
    write(tmp_path / "d.csv", "a,b,label\n" + "\n".join(rows) + "\n")
    for command in ("validate", "run"):
        code, _, err = cli(command, spec_file(tmp_path, "csv:d.csv"))
        assert code == 2 and one_line(err) and "line 8 has 4 values, the header names 3 columns" in err, err


# 6. Parquet columns of lists, maps and structs.

@pytest.mark.parametrize("values", [[[1, 2], [3]], [{"k": 1}, {"k": 2}],
                                    pyarrow.array([[("a", 1)], [("b", 2)]], pyarrow.map_(pyarrow.string(),
                                                                                          pyarrow.int64()))],
                         ids=["list", "struct", "map"])
def test_a_parquet_column_of_lists_maps_or_structs_is_refused_naming_it(cli, tmp_path, values):
    """Kind: Parquet list/map/struct columns: a ValueError traceback. One line names the column."""
    table = pyarrow.table({"a": [1.0, 2.0], "tags": values, "label": [0, 1]})
    pyarrow.parquet.write_table(table, tmp_path / "d.parquet")
    for command in ("validate", "run"):
        code, _, err = cli(command, spec_file(tmp_path, "parquet:d.parquet"))
        assert code == 2 and one_line(err), err
        assert "column(s) tags" in err and "not supported" in err


# 7. Labels that mix how they write one class.

def test_labels_written_as_1_and_1_0_are_one_class(tmp_path):
    """Kind: labels `1` and `1.0` (and `0`, `0.0`) taken for different classes."""
    labels = ["1", "1.0", "0", "0.0"] * 15
    write(tmp_path / "d.csv", "a,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(labels)))
    data = prepared(tmp_path, "csv:d.csv")
    assert data.preprocessor.classes == [0, 1] and data.warnings == []


def test_a_stray_text_label_among_numbers_is_named_with_its_row(cli, tmp_path):
    """Kind: one `unknown` among numeric labels trained silently as a class of its own."""
    labels = ["1", "1.0", "0", "0.0"] * 15
    labels[41] = "unknown"
    write(tmp_path / "d.csv", "a,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(labels)))
    data = prepared(tmp_path, "csv:d.csv")
    assert data.preprocessor.classes == ["0", "1", "unknown"]
    assert any("'unknown' at data row 42, line 43" in w for w in data.warnings), data.warnings
    for command in ("validate", "run"):
        code, _, err = cli(command, spec_file(tmp_path, "csv:d.csv"), "--set", "model.kind=softmax")
        assert code == 0 and "'unknown' at data row 42, line 43" in err, err


def test_a_class_only_in_the_validation_split_is_warned_about(tmp_path):
    """Kind: a class present only in the validation split, trained silently (the model cannot learn it)."""
    write(tmp_path / "d.csv", "a,label\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(59)) + "59,z\n")
    said = {}
    for seed in range(20):
        data = prepared(tmp_path, "csv:d.csv", extra=f", split_seed: {seed}")
        z = data.preprocessor.classes.index("z")
        said[z in data.y_val] = data.warnings
    assert any("'z'" in w and "validation split only" in w for w in said[True]), said
    assert said[False] == []


# 8. Labels kept as written; the CNN whose config the builder once could not build.

def test_class_labels_come_back_as_written(cli, tmp_path):
    """Kind: class labels changed on the way through: leading zeros (`01`) lost, and the class `NA`
    read as a missing value (exit 2). Predictions give the labels as the data writes them."""
    for labels in (["01", "02", "10"], ["NA", "OK"]):
        rows = [(i, labels[i % len(labels)]) for i in range(90)]
        write(tmp_path / "d.csv", "a,label\n" + "".join(f"{i % len(labels)},{y}\n" for i, y in rows))
        spec = write(tmp_path / "job.yaml", "data: {source: 'csv:d.csv', target: label, categorical: [a]}\n"
                                            "model: {kind: softmax}\ntrain: {lr: 0.5, epochs: 20}\n")
        code, out, err = cli("run", spec, "--json")
        assert code == 0, err
        write(tmp_path / "new.csv", "a\n" + "".join(f"{k}\n" for k in range(len(labels))))
        code, out, err = cli("predict", last_json(out)["model_path"], "--input", tmp_path / "new.csv", "--json")
        assert code == 0 and last_json(out)["predictions"] == labels, (labels, out, err)


def test_a_blank_target_is_still_missing(tmp_path):
    """Guard for the kind above: the target read as written (`NA`, `01`) still takes a blank cell for
    missing, and the error names its line."""
    write(tmp_path / "d.csv", "a,label\n" + "".join(f"{i},{'xy'[i % 2] if i != 4 else ' '}\n" for i in range(20)))
    assert "target 'label' is missing at data row 5, line 6" in refusal(tmp_path, "csv:d.csv")


@pytest.mark.usefixtures("ray_address")
def test_the_cnn_with_four_even_kernel_layers_trains_a_correct_model_on_two_workers(cli, tmp_path):
    """Kind: a CNN config the model builder once sized wrongly (`channels: [8, 8, 8, 8]`,
    `kernel_size: 2` on 8x8 digits): it must train a correct model on 2 workers, not merely exit 0."""
    import torch

    from elastrain.models.zoo import build_model
    from elastrain.spec import CnnModelSpec

    model = build_model(CnnModelSpec(channels=[8, 8, 8, 8], kernel_size=2, hidden=[64]), (1, 8, 8), 10)
    shapes = []
    x = torch.zeros(3, 64)
    for layer in model:
        x = layer(x)
        shapes.append(tuple(x.shape))
    assert shapes[-1] == (3, 10) and all(min(s[2:], default=1) >= 1 for s in shapes)
    spec = write(tmp_path / "cnn.yaml", "data: {source: 'builtin:digits', split_seed: 0}\n"
                                        "model: {kind: cnn, channels: [8, 8, 8, 8], kernel_size: 2, hidden: [64]}\n"
                                        "train: {optimizer: adam, lr: 0.005, batch_size: 64, epochs: 15, seed: 0}\n"
                                        "resources: {workers: {min: 2, max: 2}, cpus_per_worker: 1}\n")
    code, out, err = cli("run", spec, "--json")
    result = last_json(out)
    assert code == 0, err
    # 0.83 on one worker; chance is 0.1 (the four poolings leave 8 values of each 8x8 image).
    assert result["metrics"]["val_accuracy"] >= 0.7, result["metrics"]
