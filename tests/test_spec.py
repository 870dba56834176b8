"""The job spec: defaults, normalization, and one actionable line for every kind of mistake."""

import json

import pytest

from elastrain.errors import UserError
from elastrain.plugins import LEARNERS, register_learner
from elastrain.spec import (
    CnnModelSpec,
    LinearModelSpec,
    MlpModelSpec,
    PluginModelSpec,
    PythonModelSpec,
    SvmModelSpec,
    load_spec,
    parse_model_spec,
    parse_spec,
    validate_spec,
)
from elastrain.spec.tune import TuneSpec
from elastrain.tune.space import check_space


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


def test_a_workers_memory_is_mib_or_a_size_with_its_unit():
    def memory(value):
        return parse_spec(f"resources: {{memory_per_worker: {value}}}").resources.memory_per_worker

    assert memory(1536) == 1536 and memory("'2GiB'") == 2048 and memory("'1536 MiB'") == 1536
    assert memory("'1GB'") == pytest.approx(1e9 / 2**20)
    assert parse_spec("").resources.memory_per_worker is None and parse_spec("").resources.memory_bytes == 0
    line = error_line("resources:\n  memory_per_worker: lots\n")
    assert line.startswith("job.yaml:2:") and "resources.memory_per_worker" in line and "'2GiB'" in line
    assert "greater than 0" in error_line("resources:\n  memory_per_worker: 0\n")


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


@pytest.mark.parametrize(("model", "member", "fields"), [
    ("{kind: linear}", LinearModelSpec, {}),
    ("{kind: logistic, task: classification}", LinearModelSpec, {"task": "classification"}),
    ("{kind: softmax}", LinearModelSpec, {}),
    ("{kind: svm, kernel: rbf, gamma: 0.5, n_components: 64}", SvmModelSpec,
     {"kernel": "rbf", "gamma": 0.5, "n_components": 64}),
    ("{hidden: [32, 16], activation: tanh, dropout: 0.25}", MlpModelSpec,
     {"kind": "mlp", "hidden": [32, 16], "activation": "tanh", "dropout": 0.25}),
    ("{kind: cnn, channels: [8], kernel_size: 5, hidden: [16], activation: gelu, dropout: 0.1}", CnnModelSpec,
     {"channels": [8], "kernel_size": 5, "hidden": [16], "activation": "gelu", "dropout": 0.1}),
    ("{kind: 'python:my_model:build', options: {width: 8}}", PythonModelSpec, {"options": {"width": 8}}),
])
def test_each_model_kind_validates_to_its_own_fields(model, member, fields):
    spec = parse_spec(f"model: {model}\n")
    assert type(spec.model) is member
    assert {name: getattr(spec.model, name) for name in fields} == fields
    assert validate_spec(spec.model_dump(mode="json")).model == spec.model   # what a job stores reads back


@pytest.mark.parametrize(("model", "expected"), [
    ("kind: mlp\n  kernel: rbf", "job.yaml:4: model.kernel: kernel rbf applies to model svm, not mlp;"),
    ("kind: svm\n  hidden: [32]", "job.yaml:4: model.hidden: hidden applies to models mlp, cnn, not svm;"),
    ("kind: linear\n  channels: [4]", "job.yaml:4: model.channels: channels applies to model cnn, not linear;"),
    ("kind: mlp\n  options: {a: 1}", "job.yaml:4: model.options: options applies to models "
                                      "python:module:function"),
])
def test_a_field_of_another_kind_is_one_line_naming_the_kinds_that_take_it(model, expected):
    line = error_line(f"name: x\nmodel:\n  {model}\n")
    assert line.startswith(expected) and len(line.splitlines()) == 1, line


def test_a_field_of_another_kind_at_its_default_is_dropped_so_the_kind_can_be_overridden():
    dumped = parse_spec("model: {kind: mlp}").model_dump(mode="json")   # hidden, activation, dropout: defaults
    assert type(parse_spec(json.dumps(dumped), overrides=["model.kind=svm"]).model) is SvmModelSpec   # JSON is YAML
    line = error_line("model: {kind: mlp, hidden: [32]}", ["model.kind=svm"])
    assert "model.hidden: hidden applies to models mlp, cnn, not svm" in line


def test_a_typo_in_a_model_field_names_the_nearest_field_of_its_kind():
    line = error_line("model:\n  kind: cnn\n  chanels: [8]\n")
    assert line.startswith("job.yaml:3: unknown field 'model.chanels'") and "did you mean 'channels'?" in line
    assert "model.hidden: every layer size must be >= 1" in error_line("model: {hidden: [0]}")
    assert "model.gamma: gamma must be a positive number or scale" in error_line("model: {kind: svm, gamma: -1}")


def test_an_unknown_model_kind_is_one_line_with_the_kinds_there_are():
    line = error_line("model:\n  kind: transformer\n")
    assert line == ("job.yaml:2: model.kind: unknown model 'transformer'; choose one of linear, logistic, softmax, "
                    "svm, mlp, cnn, text, gbdt, random_forest, decision_tree or python:module:function (or name the "
                    "plugin that registers it under `plugins`)")
    assert "must look like python:package.module:function" in error_line("model: {kind: 'python:x'}")
    assert "model: Input should be a mapping of the model's fields" in error_line("model: mlp")


def test_a_flat_model_spec_an_older_version_saved_still_loads():
    # Every model.json before the union held all of these, whatever the kind.
    flat = {"kind": "svm", "task": "classification", "hidden": [128], "activation": "relu", "dropout": 0.0,
            "channels": [16, 32], "kernel_size": 3, "kernel": "rbf", "gamma": 0.5, "n_components": 200,
            "options": {}}
    assert parse_model_spec(flat) == SvmModelSpec(task="classification", kernel="rbf", gamma=0.5, n_components=200)
    older = {key: value for key, value in flat.items() if key not in ("kernel", "gamma", "n_components")}
    assert parse_model_spec({**older, "kind": "mlp"}) == MlpModelSpec(task="classification", hidden=[128])
    assert type(validate_spec({"model": {**flat, "kind": "cnn"}}).model) is CnnModelSpec   # a stored job's spec


def test_a_kind_a_plugin_registers_is_a_plugin_model_spec():
    @register_learner("test-median")
    class MedianLearner:
        pass

    try:
        spec = parse_spec("model: {kind: test-median, task: regression, options: {quantile: 0.5}}")
        assert type(spec.model) is PluginModelSpec
        assert (spec.model.kind, spec.model.task) == ("test-median", "regression")
        assert spec.model.options == {"quantile": 0.5}
        assert "model.hidden: hidden applies to models mlp, cnn, not test-median" in error_line(
            "model: {kind: test-median, hidden: [8]}")
        assert "unknown field 'model.depth'" in error_line("model: {kind: test-median, depth: 3}")
        assert ("choose one of linear, logistic, softmax, svm, mlp, cnn, text, gbdt, random_forest, decision_tree, "
                "test-median or") in error_line("model: {kind: test-mean}")
    finally:
        del LEARNERS["test-median"]
    assert "unknown model 'test-median'" in error_line("model: {kind: test-median}")


def test_the_model_task_can_be_set_after_validation_and_is_checked():
    spec = parse_spec("model: {kind: cnn}")
    spec.model.task = "regression"   # as the data reader does when the target decides the task
    assert spec.model.task == "regression"
    with pytest.raises(ValueError, match="task"):
        spec.model.task = "ranking"


def test_a_study_may_vary_the_model_kind_with_fields_conditional_on_it():
    spec = parse_spec("model: {kind: svm}")
    tune = TuneSpec.model_validate({"space": {
        "model.kind": {"type": "categorical", "choices": ["svm", "mlp"]},
        "model.hidden": {"type": "categorical", "choices": [[32], [64, 32]], "when": {"model.kind": "mlp"}},
    }})
    check_space(spec, tune, "job.yaml")
    unconditional = TuneSpec.model_validate({"space": {"model.hidden": {"type": "categorical", "choices": [[32]]}}})
    with pytest.raises(UserError, match="hidden applies to models mlp, cnn, not svm"):
        check_space(spec, unconditional, "job.yaml")
