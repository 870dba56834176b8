"""The Python API: elastrain.Job, elastrain.load_model on raw rows, and the README's example."""

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import elastrain
from elastrain.runs import RunFolder
from tests.conftest import REPO, wait_until


def readme_example() -> str:
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_example_runs(tmp_path):
    env = {**os.environ, "ELASTRAIN_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("succeeded val_accuracy 0.9") and str(tmp_path / "home") in lines[0]
    assert "train.lr" in lines[-1] and "Traceback" not in done.stderr


@pytest.fixture
def colors(tmp_path, elastrain_home):
    """A model trained on a CSV with a numeric and a categorical column, and new raw rows as a CSV."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(10, 3, 300).round(2), "color": rng.choice(["red", "blue"], 300)})
    frame["target"] = np.where(frame["size"] + 4 * (frame["color"] == "red") > 12, "big", "small")
    frame.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "job.yaml").write_text("data: {source: 'csv:train.csv'}\nmodel: {kind: logistic}\n"
                                       "train: {optimizer: adam, lr: 0.05, epochs: 40}\n")
    result = elastrain.Job.from_yaml(tmp_path / "job.yaml").run()
    frame.drop(columns="target").head(40).to_csv(tmp_path / "new.csv", index=False)
    return result, tmp_path / "new.csv"


def test_load_model_predicts_raw_rows_as_the_predict_command_does(colors, cli):
    result, new = colors
    assert result.status == "succeeded" and result.metrics["val_accuracy"] >= 0.9
    code, out, _ = cli("predict", result.model_path, "--input", new, "--json")
    expected = json.loads(out.strip().splitlines()[-1])["predictions"]
    model = elastrain.load_model(result.model_path)
    with new.open() as handle:
        records = list(csv.DictReader(handle))   # every value a string, as a CSV holds it
    frame = pd.read_csv(new)
    assert code == 0 and set(expected) == {"big", "small"}
    assert model.predict(records) == expected
    assert model.predict(frame) == expected
    assert model.predict(frame[["color", "size"]].to_dict("records")) == expected   # by name, any order
    assert model.predict(frame.values.tolist()) == expected                         # by position
    probabilities = model.predict_proba(records)
    assert probabilities.shape == (40, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert [model.classes[i] for i in probabilities.argmax(axis=1)] == expected


def test_bad_rows_and_impossible_probabilities_are_one_clear_error(colors):
    result, _ = colors
    model = elastrain.load_model(result.model_path)
    with pytest.raises(elastrain.UserError, match="a row has 3 values, the model takes 2"):
        model.predict([[1.0, "red", 3]])
    with pytest.raises(elastrain.UserError, match=r"missing feature column.*color"):
        model.predict([{"size": 1.0}])
    with pytest.raises(elastrain.UserError, match="green"):
        model.predict([{"size": 1.0, "color": "green"}])
    regression = elastrain.Job.from_yaml(REPO / "examples" / "linear_diabetes.yaml",
                                         overrides=["train.epochs=2"]).run()
    with pytest.raises(elastrain.UserError, match=r"regression model .* gives no probabilities"):
        elastrain.load_model(regression.model_path).predict_proba(np.zeros((1, 10)))


def test_a_job_from_a_dict_takes_overrides_and_checks_them():
    spec = {"name": "iris", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"}}
    job = elastrain.Job(spec, overrides={"train.epochs": 3, "train.schedule": {"kind": "cosine"}})
    assert job.spec.train.epochs == 3 and job.spec.train.schedule.kind == "cosine"
    assert spec == {"name": "iris", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"}}
    assert elastrain.Job(job.spec, overrides=["train.lr=0.5"]).spec.train.lr == 0.5
    with pytest.raises(elastrain.UserError, match=r"train\.epochs"):
        elastrain.Job(spec, overrides={"train.epochs": 0})


def test_importing_elastrain_loads_no_training_library():
    code = "import sys, elastrain; print(sorted({'torch', 'ray', 'pandas', 'sklearn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    assert all(getattr(elastrain, name) for name in elastrain.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        elastrain.Trainer  # noqa: B018


@pytest.mark.usefixtures("ray_address")
def test_a_started_job_is_followed_resized_and_cancelled_through_its_handle(elastrain_home):
    spec = {"name": "handled", "data": {"source": "builtin:digits"}, "model": {"kind": "mlp", "hidden": [64]},
            "train": {"optimizer": "adam", "batch_size": 60, "epochs": 10_000},
            "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1, "wait_timeout_s": 60}}
    handle = elastrain.Job(spec).start(home=elastrain_home)
    try:
        # It starts on workers.max (2), one of them perhaps joining at a later step.
        wait_until(lambda: handle.status().workers == 2 and handle.status().step > 0)
        assert handle.status().job_id == handle.job_id and not handle.wait(timeout=0)
        with pytest.raises(elastrain.UserError, match=r"outside this job's resources\.workers range 1\.\.2"):
            handle.scale(3)
        began = time.time()
        handle.scale(1)
        wait_until(lambda: any(e.kind == "resized" for e in handle.events(since=began)))
    finally:
        handle.cancel()
    result = handle.result(timeout=120)
    assert result.status == "cancelled" and result.job_id == handle.job_id and result.model_path is None
    assert handle.status().state == "cancelled" and handle.events()[-1].kind == "cancelled"
    losses = handle.metrics()["train_loss"]
    assert losses and losses[-1]["step"] <= result.steps
    assert handle.metrics(since=losses[-1]["t"]).get("train_loss", []) == []
    with pytest.raises(elastrain.UserError, match="has ended"):
        handle.scale(1)


def test_a_job_records_its_training_loss_per_step_or_per_block(elastrain_home, monkeypatch):
    spec = {"name": "losses", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
            "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 10, "epochs": 3}}
    result = elastrain.Job(spec).run()
    points = RunFolder(Path(result.run_dir)).read_losses()
    assert [p["step"] for p in points] == list(range(1, result.steps + 1))
    assert {p["epoch"] for p in points} == {1, 2, 3} and all(p["steps"] == 1 for p in points)
    assert points[-1]["loss"] < points[0]["loss"]
    # A longer job averages blocks of steps, closing a block at each epoch's end.
    monkeypatch.setattr("elastrain.elastic.job.MAX_LOSS_POINTS", 10)
    result = elastrain.Job(spec).run()
    blocks = RunFolder(Path(result.run_dir)).read_losses()
    per_epoch = result.steps // 3
    block = -(-result.steps // 10)
    assert sum(p["steps"] for p in blocks) == result.steps and max(p["steps"] for p in blocks) == block
    assert [p["step"] for p in blocks if p["step"] % per_epoch == 0] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    first = [p for p in points if p["step"] <= blocks[0]["step"]]
    assert blocks[0]["loss"] == pytest.approx(sum(p["loss"] for p in first) / len(first))


def test_two_dropout_jobs_at_once_in_one_process_each_equal_their_solo_run(elastrain_home):
    """Nothing in a training step draws from the process's random generator, so jobs that share
    a process (the server's) do not change each other's dropout masks."""
    import torch

    def spec(seed):
        return {"name": f"dropout-{seed}", "data": {"source": "builtin:digits"},
                "model": {"kind": "mlp", "hidden": [128, 64], "dropout": 0.4},
                "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "epochs": 2, "seed": seed}}

    def weights(result):
        return torch.load(Path(result.model_path) / "model.pt", weights_only=True)

    solo = [elastrain.Job(spec(seed)).run() for seed in (1, 2)]
    handles = [elastrain.Job(spec(seed)).start() for seed in (1, 2)]
    together = [handle.result(timeout=300) for handle in handles]
    for alone, shared in zip(solo, together, strict=True):
        assert all(torch.equal(weights(alone)[k], v) for k, v in weights(shared).items())


def test_jobs_without_a_server_lists_this_machines_runs(cli):
    first = elastrain.Job.from_yaml(REPO / "examples" / "svm_iris.yaml", overrides={"train.epochs": 2}).run()
    second = elastrain.Job.from_yaml(REPO / "examples" / "linear_diabetes.yaml", overrides={"train.epochs": 2}).run()
    code, out, _ = cli("jobs", "--json")
    page = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and page["total"] == 2
    assert [(j["job_id"], j["status"]) for j in page["jobs"]] == [(first.job_id, "succeeded"),
                                                                   (second.job_id, "succeeded")]
    assert page["jobs"][0]["metrics"]["val_accuracy"] == first.metrics["val_accuracy"]
    code, out, _ = cli("jobs", "--limit", "1", "--json")
    assert [j["job_id"] for j in json.loads(out.strip().splitlines()[-1])["jobs"]] == [second.job_id]


def test_metrics_without_a_server_shows_a_local_runs_loss_and_validation(cli):
    result = elastrain.Job.from_yaml(REPO / "examples" / "svm_iris.yaml", overrides={"train.epochs": 3}).run()
    code, out, _ = cli("metrics", result.job_id, "--json")
    series = json.loads(out.strip().splitlines()[-1])["series"]
    assert code == 0 and [p["epoch"] for p in series["val_accuracy"]] == [1, 2, 3]
    assert series["val_accuracy"][-1]["value"] == result.metrics["val_accuracy"]
    assert [p["step"] for p in series["train_loss"]] == list(range(1, result.steps + 1))
    code, _, err = cli("metrics", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in err
