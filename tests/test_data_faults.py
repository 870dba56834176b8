"""Silent wrong answers in the data layer (issue 10, faults 4-6): each test names the kind of fault it guards."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from elastrain.data import Preprocessor, prepare_dataset
from elastrain.errors import UserError
from elastrain.spec import load_spec, parse_spec


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def write(path, text: str):
    path.write_text(text)
    return path


def stores_csv(path, blank_row: int | None = None, n: int = 240):
    """`store,x,y` with store in {1, 2, 3} and y = hi exactly when store is 2; optionally one blank store."""
    rng = np.random.default_rng(0)
    store = np.arange(n) % 3 + 1
    noise = rng.normal(size=n)
    lines = ["store,x,y"] + [f"{s},{x:.3f},{'hi' if s == 2 else 'lo'}" for s, x in zip(store, noise, strict=True)]
    if blank_row is not None:
        lines[blank_row + 1] = f",0.5,{lines[blank_row + 1].split(',')[2]}"
    write(path, "\n".join(lines) + "\n")


def train_stores(cli, tmp_path, blank_row: int | None) -> str:
    stores_csv(tmp_path / "train.csv", blank_row)
    spec = write(tmp_path / "job.yaml", "data: {source: 'csv:train.csv', target: y, categorical: [store]}\n"
                                        "model: {kind: logistic}\ntrain: {lr: 0.1, epochs: 15}\n")
    code, out, err = cli("run", spec, "--json")
    assert code == 0, err
    return last_json(out)["model_path"]


def predict(cli, model_path: str, path, text: str) -> tuple[int, list | None, str]:
    write(path, text)
    code, out, err = cli("predict", model_path, "--input", path, "--json")
    return code, last_json(out)["predictions"] if code == 0 else None, err


def test_integer_categories_typed_as_floats_by_a_blank_training_cell_match_clean_input(cli, tmp_path):
    """Fault kind: category values compared by how pandas typed the column (1.0 vs 1), not by value."""
    model_path = train_stores(cli, tmp_path, blank_row=7)
    code, predicted, err = predict(cli, model_path, tmp_path / "new.csv", "store,x\n1,0\n2,0\n3,0\n2,0\n")
    assert code == 0, err
    assert predicted == ["lo", "hi", "lo", "hi"]


def test_a_model_trained_on_clean_categories_reads_float_typed_and_text_input(cli, tmp_path):
    """Fault kind: category values compared by how pandas typed the column (1 vs 1.0 vs "1"), not by value."""
    model_path = train_stores(cli, tmp_path, blank_row=None)
    code, predicted, err = predict(cli, model_path, tmp_path / "floats.csv", "store,x\n1.0,0\n2.0,0\n3,0\n2,0\n")
    assert code == 0, err
    assert predicted == ["lo", "hi", "lo", "hi"]
    pre = Preprocessor.from_dict(json.loads((Path(model_path) / "preprocess.json").read_text()))
    as_int = pre.transform_frame(pd.DataFrame({"store": [1, 2], "x": [0.0, 0.0]}))
    as_text = pre.transform_frame(pd.DataFrame({"store": ["1", "2"], "x": [0.0, 0.0]}))
    as_float = pre.transform_frame(pd.DataFrame({"store": [1.0, 2.0], "x": [0.0, 0.0]}))
    assert np.array_equal(as_int, as_text) and np.array_equal(as_int, as_float)


def test_a_blank_category_at_predict_time_unseen_in_training_is_an_error_naming_column_and_line(cli, tmp_path):
    """Fault kind: a blank categorical cell silently encoded differently in predict than in training."""
    model_path = train_stores(cli, tmp_path, blank_row=None)
    code, _, err = predict(cli, model_path, tmp_path / "new.csv", "store,x\n1,0\n,0\n3,0\n")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'store'" in err and "line 3" in err and "blank" in err


def test_a_blank_category_seen_in_training_is_its_own_level_at_predict_time(cli, tmp_path):
    """Fault kind: blank categorical cells follow one declared policy (a "(missing)" level) in training and predict."""
    model_path = train_stores(cli, tmp_path, blank_row=7)
    code, predicted, err = predict(cli, model_path, tmp_path / "new.csv", "store,x\n,0\n2,0\n")
    assert code == 0 and len(predicted) == 2 and predicted[1] == "hi", err
    pre = Preprocessor.from_dict(json.loads((Path(model_path) / "preprocess.json").read_text()))
    assert "(missing)" in pre.categories["store"]
    as_objects = pre.transform_frame(pd.DataFrame({"store": [None, 2], "x": [0.0, 0.0]}, dtype=object))
    as_floats = pre.transform_frame(pd.DataFrame({"store": [np.nan, 2.0], "x": [0.0, 0.0]}))
    assert np.array_equal(as_objects, as_floats) and as_objects[:, :-1].sum(axis=1).tolist() == [1, 1]


def test_an_unseen_category_at_predict_time_is_an_error_not_all_zeros(cli, tmp_path):
    """Fault kind: a category not seen in training silently encoded as all zeros."""
    model_path = train_stores(cli, tmp_path, blank_row=None)
    code, _, err = predict(cli, model_path, tmp_path / "new.csv", "store,x\n1,0\n2,0\n4,0\n")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'store'" in err and "'4'" in err and "line 4" in err and "1, 2, 3" in err


def test_saved_float_categories_of_older_models_are_read_by_value():
    """Fault kind: category values compared by type; a preprocess.json written before the fix ("1.0") still loads."""
    old = {"layout": "table", "input_shape": [3], "columns": ["store"], "categories": {"store": ["1.0", "2.0", "3.0"]},
           "center": [0, 0, 0], "scale": [1, 1, 1], "classes": ["hi", "lo"]}
    encoded = Preprocessor.from_dict(old).transform_frame(pd.DataFrame({"store": [2, 3]}))
    assert encoded.tolist() == [[0, 1, 0], [0, 0, 1]]


def dataset(tmp_path, yaml_text: str):
    return prepare_dataset(load_spec(write(tmp_path / "job.yaml", yaml_text)))


def test_a_builtin_regression_data_set_carries_its_task():
    """Fault kind: a regression target taken for classes (builtin:diabetes with model mlp and loss auto)."""
    spec = parse_spec("data: {source: 'builtin:diabetes'}\nmodel: {kind: mlp}")
    assert spec.task == "regression" and spec.loss == "mse"
    data = prepare_dataset(spec)
    assert data.task == "regression" and data.n_classes is None


def test_the_mlp_on_diabetes_trains_a_regression(cli, tmp_path):
    """Fault kind: a regression target taken for classes, reported as a succeeded job with val_accuracy 0."""
    spec = write(tmp_path / "job.yaml", "data: {source: 'builtin:diabetes'}\nmodel: {kind: mlp}\ntrain: {epochs: 2}\n")
    code, out, err = cli("run", spec, "--json")
    metrics = last_json(out)["metrics"]
    assert code == 0 and "val_r2" in metrics and "val_accuracy" not in metrics, err


def test_task_auto_follows_the_values_of_a_file_target(tmp_path):
    """Fault kind: a regression target taken for classes; task auto decides by the target's values."""
    cases = [(lambda i: f"{i * 0.37:.2f}", "regression"),       # a float target
             (lambda i: str(i % 60), "regression"),             # 60 distinct integers in 200 rows
             (lambda i: f"{i % 3}.0", "classification"),        # three classes, typed as floats
             (lambda i: ["a", "b"][i % 2], "classification")]   # text labels
    for values, task in cases:
        write(tmp_path / "d.csv", "f,t\n" + "".join(f"{i % 7},{values(i)}\n" for i in range(200)))
        spec = load_spec(write(tmp_path / "job.yaml", "data: {source: 'csv:d.csv', target: t}\nmodel: {kind: mlp}"))
        data = prepare_dataset(spec)
        assert (data.task, spec.task) == (task, task), values(1)
        assert spec.loss == ("mse" if task == "regression" else "cross_entropy")


def test_a_classification_with_about_one_class_per_few_rows_warns(tmp_path):
    """Fault kind: a regression target taken for classes when the user asked for a classifier: warn."""
    write(tmp_path / "d.csv", "f,t\n" + "".join(f"{i % 7},{i % 50}\n" for i in range(200)))
    data = dataset(tmp_path, "data: {source: 'csv:d.csv', target: t}\nmodel: {kind: softmax}")
    assert data.n_classes == 50
    assert any("50 classes" in message and "regression" in message for message in data.warnings)


SEMICOLONS = "label;a;b\n" + "".join(f"{i % 2};{i},5;{i % 5},25\n" for i in range(40))


def test_semicolon_separated_values_with_decimal_commas_are_detected(tmp_path):
    """Fault kind: a CSV with another separator read as one column (and decimal commas read as text)."""
    write(tmp_path / "d.csv", SEMICOLONS)
    data = dataset(tmp_path, "data: {source: 'csv:d.csv', target: label, scaling: none}\nmodel: {kind: logistic}")
    assert data.preprocessor.columns == ["a", "b"] and data.preprocessor.feature_names == ["a", "b"]
    together = np.concatenate([data.x_train, data.x_val])
    assert sorted(together[:, 0].tolist()) == [i + 0.5 for i in range(40)]


def test_the_hint_for_a_missing_target_names_the_separator_not_the_whole_header(tmp_path):
    """Fault kind: an error hint that sends the user to a wrong fix (data.target 'label;a;b')."""
    write(tmp_path / "d.csv", SEMICOLONS)
    with pytest.raises(UserError) as forced:
        dataset(tmp_path, "data: {source: 'csv:d.csv', csv: {sep: ','}}\nmodel: {kind: logistic}")
    assert "data.csv.sep" in forced.value.line() and "data.target to 'label;a;b'" not in forced.value.line()
    with pytest.raises(UserError) as detected:
        dataset(tmp_path, "data: {source: 'csv:d.csv'}\nmodel: {kind: logistic}")
    assert "';'" in detected.value.line() and "data.target to 'label'" in detected.value.line()


def test_explicit_csv_options_override_detection_and_apply_at_predict_time(cli, tmp_path):
    """Fault kind: a CSV with another separator; the separator given in the spec is used for predict input too."""
    write(tmp_path / "d.csv", SEMICOLONS.replace(";", ":"))   # ':' is not among the detected separators
    spec = write(tmp_path / "job.yaml", "data: {source: 'csv:d.csv', target: label, csv: {sep: ':', decimal: ','}}\n"
                                        "model: {kind: logistic}\ntrain: {epochs: 2}\n")
    code, out, err = cli("run", spec, "--json")
    assert code == 0, err
    code, predicted, err = predict(cli, last_json(out)["model_path"], tmp_path / "new.csv", "a:b\n1,5:2,25\n")
    assert code == 0 and len(predicted) == 1, err


def test_a_job_without_feature_columns_is_refused(cli, tmp_path):
    """Fault kind: a model trained on zero feature columns and reported as a success."""
    write(tmp_path / "d.csv", "label;a;b\n" + "".join(f"{i % 2};{i};{i % 5}\n" for i in range(40)))
    spec = write(tmp_path / "job.yaml", "data: {source: 'csv:d.csv', target: 'label;a;b', csv: {sep: ','}}\n"
                                        "model: {kind: logistic}\n")
    code, _, err = cli("run", spec)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no feature columns" in err and "data.csv.sep" in err
