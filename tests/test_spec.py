"""The job spec: defaults, normalization, and one actionable line for every kind of mistake."""

import pytest

from elastrain.errors import UserError
from elastrain.spec import load_spec, parse_spec


def error_line(text: str, overrides=None) -> str:
    with pytest.raises(UserError) as caught:
        parse_spec(text, "job.yaml", overrides)
    return caught.value.line()


def test_empty_spec_gets_working_defaults():
    spec = parse_spec("", "job.yaml")
    assert spec.data.source == "builtin:digits"
    assert spec.model.kind == "mlp" and spec.loss == "cross_entropy" and spec.task == "classification"
    assert spec.train.epochs == 10 and spec.resources.workers.min == 1


def test_loss_and_task_follow_the_model():
    assert parse_spec("model: {kind: linear}").loss == "mse"
    assert parse_spec("model: {kind: linear}").task == "regression"
    assert parse_spec("model: {kind: logistic}").loss == "bce"
    assert parse_spec("model: {kind: svm}").loss == "hinge"
    assert parse_spec("model: {kind: mlp}\ntrain: {loss: mae}").task == "regression"


def test_unknown_field_names_the_nearest_valid_one_and_the_line():
    line = error_line("name: x\ntrain:\n  epochs: 3\n  lrr: 0.1\n")
    assert line.startswith("job.yaml:4:") and "train.lrr" in line and "did you mean 'lr'" in line


def test_yaml_syntax_error_gives_the_line():
    line = error_line("name: x\ntrain:\n  lr: [0.1\n  epochs: 3\n")
    assert "YAML syntax error" in line and line.startswith("job.yaml:4:")


def test_wrong_type_and_out_of_range():
    assert "train.lr" in error_line("train:\n  lr: fast\n") and "valid number" in error_line("train:\n  lr: fast\n")
    line = error_line("train:\n  lr: 0\n")
    assert line.startswith("job.yaml:2:") and "greater than 0" in line
    assert "train.batch_size" in error_line("train:\n  batch_size: 0\n")


def test_loss_that_does_not_fit_the_model():
    line = error_line("model:\n  kind: linear\ntrain:\n  loss: hinge\n")
    assert line.startswith("job.yaml:4: train.loss") and "mse, mae" in line


def test_cross_field_errors_point_at_the_field():
    assert "resources.workers.min" in error_line("resources:\n  workers: {min: 3, max: 2}\n")
    assert "train.batch_size" in error_line("train:\n  optimizer: gd\n  batch_size: 8\n")
    assert "model.task" in error_line("model: {kind: softmax, task: regression}")


def test_unknown_source_and_model_kinds():
    assert "data.source" in error_line("data: {source: 'ftp:x'}")
    assert "choose one of digits" in error_line("data: {source: 'builtin:mnist'}")
    assert "unknown model" in error_line("model: {kind: transformer}")


def test_overrides_apply_and_are_named_in_errors():
    spec = parse_spec("train: {lr: 0.1}", overrides=["train.lr=0.5", "model.hidden=[8, 4]"])
    assert spec.train.lr == 0.5 and spec.model.hidden == [8, 4]
    assert error_line("train: {lr: 0.1}", ["train.lr=-1"]).startswith("--set train.lr:")
    assert "field=value" in error_line("", ["train.lr"])


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_relative_data_paths_follow_the_spec_file(tmp_path):
    (tmp_path / "jobs").mkdir()
    spec_file = tmp_path / "jobs" / "job.yaml"
    spec_file.write_text("data: {source: 'csv:../data/train.csv'}\ncheckpoint: {dir: ckpt}\n")
    spec = load_spec(spec_file)
    assert spec.data.source == f"csv:{tmp_path / 'data' / 'train.csv'}"
    assert spec.checkpoint.dir == str(tmp_path / "jobs" / "ckpt")
