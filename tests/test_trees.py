"""Tree models (issue 31): XGBoost on the learner seam, the same trees on any number of workers and
across resizes and lost workers, metrics, early stopping, saved boosters that predict and serve."""

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer

from elastrain import load_model
from elastrain.data.rows import open_source
from elastrain.elastic import RunOptions, run_job
from elastrain.elastic.chaos import parse_chaos
from elastrain.elastic.control import JobControl
from elastrain.runs import RunFolder
from elastrain.spec import parse_spec
from elastrain.train.learner import build_learner
from elastrain.train.loop import fit
from tests.conftest import wait_until

BINARY = """
name: trees-binary
data: {source: 'builtin:breast_cancer', scaling: none, split_seed: 0}
model: {kind: gbdt, rounds: 25, max_depth: 3, learning_rate: 0.2}
train: {seed: 4}
resources: {workers: {min: 1, max: %d}, cpus_per_worker: 1, wait_timeout_s: 120}
"""


def spec_of(text: str, workers: int = 1, **model) -> object:
    spec = parse_spec(text % workers)
    return spec.model_copy(update={"model": spec.model.model_copy(update=model)}) if model else spec


def train_here(spec):
    """A tree learner trained in this process (a group of one), and how its fit ended."""
    learner = build_learner(spec)
    learner.check()
    return learner, fit(learner)


def features(spec) -> np.ndarray:
    """The job's training and validation features, as its model takes them."""
    data = open_source(spec)
    x, _ = data.train_rows(np.arange(data.n_train))
    val = np.concatenate([chunk for chunk, _ in data.val_chunks(0, 1)])
    return np.concatenate([x, val])


def test_one_worker_grows_the_trees_of_xgboost_train_on_the_same_cuts():
    """Kind: parity with the reference. A job on one worker ends with the booster that XGBoost's own
    `xgboost.train` grows from the same rows, cuts and parameters, and its validation AUC and log
    loss are XGBoost's own evaluation of it."""
    spec = spec_of(BINARY)
    learner, outcome = train_here(spec)
    assert outcome.status == "done" and learner.step == 25
    data = learner.data
    order = np.random.default_rng([spec.train.seed, 0]).permutation(data.n_train)
    x, y = data.train_rows(order)
    reference = xgboost.train(learner.params, xgboost.QuantileDMatrix(x, label=y, ref=learner.cuts,
                                                                      max_bin=spec.model.max_bin), 25)
    every = xgboost.DMatrix(features(spec))
    ours = xgboost.Booster(model_file=bytearray(learner._raw()))
    assert np.abs(ours.predict(every) - reference.predict(every)).max() <= 1e-6
    val = xgboost.DMatrix(np.concatenate([chunk for chunk, _ in data.val_chunks(0, 1)]),
                          label=np.concatenate([chunk for _, chunk in data.val_chunks(0, 1)]))
    for metric, ours_name in (("logloss", "log_loss"), ("auc", "auc")):
        reference.set_param({"eval_metric": metric})
        theirs = float(reference.eval(val).rsplit(":", 1)[1])
        assert outcome.metrics[ours_name] == pytest.approx(theirs, abs=1e-5), metric
    assert 0.9 < outcome.metrics["accuracy"] <= 1.0
    gains = outcome.metrics["feature_gain"]   # scikit-learn's names, largest total gain first
    assert gains[0][0] in load_breast_cancer().feature_names and gains[0][1] >= gains[-1][1] > 0
    total = reference.get_score(importance_type="total_gain")
    assert gains[0][1] == pytest.approx(max(total.values()), rel=1e-6)


def test_auc_and_log_loss_are_scikit_learns():
    """Kind: a metric against its reference. The per-round AUC (ties included, one-vs-rest for
    several classes) and log loss equal scikit-learn's."""
    from sklearn.metrics import log_loss, roc_auc_score

    from elastrain.train.tree_metrics import validation_metrics

    rng = np.random.default_rng(0)
    for n_classes in (2, 3):
        targets = rng.integers(0, n_classes, 5000)
        scores = np.round(rng.normal(size=(5000, 1 if n_classes == 2 else 3)) + targets[:, None] * 0.5, 1)  # ties
        metrics = validation_metrics(scores, targets.astype(np.float64), "classification", n_classes)
        if n_classes == 2:
            p = 1 / (1 + np.exp(-scores[:, 0]))
            probabilities = np.stack([1 - p, p], axis=1)
            auc = roc_auc_score(targets, p)
        else:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))   # the learner's softmax, ties alike
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            auc = roc_auc_score(targets, probabilities, multi_class="ovr")
        assert metrics["auc"] == pytest.approx(auc, abs=1e-12)
        assert metrics["log_loss"] == pytest.approx(log_loss(targets, probabilities), abs=1e-12)


def test_early_stopping_and_keep_best_cut_the_booster_back_to_the_best_round():
    """Kind: model selection per round. With keep_best the saved booster has exactly the best
    round's trees, and early stopping stops `patience` rounds after it."""
    spec = parse_spec((BINARY % 1).replace("rounds: 25", "rounds: 400").replace(
        "train: {seed: 4}", "train: {seed: 4, keep_best: val_log_loss, early_stopping: {patience: 5}}"))
    learner, outcome = train_here(spec)
    assert learner.stopped_early and learner.step < 400
    best = learner.best
    assert learner.step == best.step + 5
    assert xgboost.Booster(model_file=bytearray(learner._raw())).num_boosted_rounds() == best.step
    assert outcome.metrics["log_loss"] == pytest.approx(best.value)


def test_eval_every_evaluates_every_kth_round_and_the_last_and_patience_counts_evaluations():
    """Kind: model selection at a coarser grain. With model.eval_every 4 the validation rows are
    evaluated after rounds 4, 8, ... and after the last; keep_best and early stopping judge only
    those evaluations, so the best round is one of them and the job stops `patience` evaluations
    after it."""
    evaluated = []
    spec = parse_spec((BINARY % 1).replace("rounds: 25", "rounds: 400, eval_every: 4").replace(
        "train: {seed: 4}", "train: {seed: 4, keep_best: val_log_loss, early_stopping: {patience: 3}}"))
    learner = build_learner(spec)
    outcome = fit(learner, on_epoch=lambda epoch, metrics: evaluated.append(learner.step))
    assert learner.stopped_early and outcome.status == "done"
    assert evaluated == list(range(4, learner.step + 1, 4))
    assert learner.best.step % 4 == 0 and learner.step == learner.best.step + 3 * 4
    assert xgboost.Booster(model_file=bytearray(learner._raw())).num_boosted_rounds() == learner.best.step
    short = build_learner(spec_of(BINARY, eval_every=10))   # 25 rounds: after 10, 20 and the last
    evaluated.clear()
    fit(short, on_epoch=lambda epoch, metrics: evaluated.append(short.step))
    assert evaluated == [10, 20, 25]


@pytest.mark.parametrize("kind, rounds, trees", [("random_forest", 1, 100), ("decision_tree", 1, 1)])
def test_a_forest_is_one_round_of_many_trees_and_a_tree_one_round_of_one(kind, rounds, trees):
    spec = spec_of(BINARY, kind=kind, rounds=None, learning_rate=None)
    learner, outcome = train_here(spec)
    booster = xgboost.Booster(model_file=bytearray(learner._raw()))
    assert learner.step == rounds and booster.num_boosted_rounds() == rounds
    assert len(booster.get_dump()) == trees
    assert outcome.metrics["accuracy"] > 0.85


def test_a_network_field_or_setting_on_a_tree_model_is_exit_2_naming_it(cli, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("model: {kind: gbdt, hidden: [8]}\n")
    code, _, err = cli("run", spec)
    assert code == 2 and "hidden applies to models mlp, cnn, not gbdt" in err, err
    spec.write_text("model: {kind: gbdt}\ntrain: {class_weights: balanced}\n")
    code, _, err = cli("run", spec)
    assert code == 2 and "train.class_weights applies to networks, not tree models" in err, err


def predictions_of(result, spec) -> np.ndarray:
    """The saved model's class probabilities (or values) for every row of the job's data."""
    model = load_model(result.model_path)
    rows = features(spec)
    if model.task == "regression":
        return np.asarray(model.predict_features(rows))
    return model.proba_features(rows)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_address")
@pytest.mark.parametrize("source, task_metric", [("breast_cancer", "auc"), ("wine", "auc"), ("diabetes", "rmse")])
def test_the_same_trees_on_one_worker_and_on_a_group_resized_3_1_3_2(elastrain_home, source, task_metric):
    """Kind: elasticity without a change to the mathematics. The job starts on 3 workers, shrinks to
    1, grows back to 3 (the workers that left wait as warm standbys, so every resize lands at the
    round it names however fast rounds are) and shrinks to 2 (binary, multi-class, regression); its
    saved model predicts what the same job on one worker predicts, to 1e-5."""
    # Rounds of a few milliseconds: a grow lands some rounds after it is asked for (the standbys are
    # attached while the group trains on), so the last resize is asked for far later.
    text = BINARY.replace("breast_cancer", source).replace("rounds: 25", "rounds: 800").replace("0.2}", "0.02}")
    alone = run_job(spec_of(text), elastrain_home)
    resized = run_job(spec_of(text, workers=3), elastrain_home,
                      options=RunOptions(chaos=parse_chaos("scale=1@step=3,scale=3@step=10,scale=2@step=400")))
    assert alone.status == resized.status == "succeeded", (alone.message, resized.message)
    events = RunFolder(Path(resized.run_dir)).read_events()
    assert [e["workers"] for e in events if e["kind"] == "resized"] == [1, 3, 2]
    assert resized.steps == alone.steps == 800
    spec = spec_of(text)
    assert np.abs(predictions_of(alone, spec) - predictions_of(resized, spec)).max() <= 1e-5
    assert resized.metrics[f"val_{task_metric}"] == pytest.approx(alone.metrics[f"val_{task_metric}"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_address")
def test_sharded_data_trains_from_external_memory_with_the_same_trees_on_one_and_two_workers(elastrain_home,
                                                                                             tmp_path):
    """Kind: data bigger than memory. A tree job on Parquet shards streams each member's pieces
    into XGBoost's external memory (binned pages on local disk, not the rows in memory), and
    grows the same trees on 1 worker in this process as on a group of 2 resized to 1 and back."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=40_000, n_features=12, n_informative=6, random_state=0)
    for part in range(4):
        rows = slice(part * 10_000, (part + 1) * 10_000)
        table = pa.table({**{f"f{j}": x[rows, j].astype(np.float32) for j in range(12)}, "label": y[rows]})
        pq.write_table(table, tmp_path / f"part-{part}.parquet", row_group_size=2_500)
    text = f"""
name: trees-sharded
data: {{source: 'parquet:{tmp_path}/part-*.parquet', target: label, scaling: none}}
model: {{kind: gbdt, rounds: 60, max_depth: 4, cut_sample: 5000}}
resources: {{workers: {{min: 1, max: %d}}, cpus_per_worker: 1, wait_timeout_s: 120}}
"""
    learner, outcome = train_here(spec_of(text))
    assert outcome.status == "done" and learner.step == 60 and outcome.metrics["auc"] > 0.9
    assert isinstance(learner.matrices.train, xgboost.ExtMemQuantileDMatrix)
    assert learner.matrices.train.num_row() == learner.n_train
    assert any(Path(learner.pages.name).glob("train-0-of-1*.page"))   # XGBoost's pages, on disk
    grouped = run_job(spec_of(text, workers=2), elastrain_home,
                      options=RunOptions(chaos=parse_chaos("scale=1@step=10,scale=2@step=30")))
    assert grouped.status == "succeeded", grouped.message
    events = RunFolder(Path(grouped.run_dir)).read_events()
    assert [e["workers"] for e in events if e["kind"] == "resized"][:1] == [1]
    every = xgboost.DMatrix(x.astype(np.float32))
    ours = xgboost.Booster(model_file=bytearray(learner._raw()))
    theirs = xgboost.Booster(model_file=str(Path(grouped.model_path) / "model.ubj"))
    assert np.abs(ours.predict(every) - theirs.predict(every)).max() <= 1e-5


def job_pids(trace_dir: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in trace_dir.glob("worker-*.jsonl")}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_address")
def test_a_worker_killed_mid_round_costs_at_most_that_round(elastrain_home, tmp_path):
    """Kind: a lost worker. One of two workers is SIGKILLed while rounds run (each long enough to be
    killed inside it); the survivor's round fails, the group re-forms in place (no checkpoint read),
    at most the round in flight is redone, and the trees equal those of an undisturbed run."""
    text = """
name: trees-kill
data: {source: 'synthetic:classification', synthetic: {n_samples: 60000, n_features: 30}, scaling: none,
       split_seed: 0}
model: {kind: gbdt, rounds: 40, max_depth: 8}
resources: {workers: {min: 1, max: %d}, cpus_per_worker: 1, wait_timeout_s: 120}
"""
    control = JobControl()
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_job(
        spec_of(text, workers=2), elastrain_home, options=RunOptions(control=control, trace_dir=str(tmp_path)))))
    runner.start()
    try:
        def status() -> dict:
            runs = list((elastrain_home / "runs").glob("*/status.json"))
            return json.loads(runs[0].read_text()) if runs else {}
        wait_until(lambda: len(job_pids(tmp_path)) == 2 and status().get("workers") == 2
                   and status().get("step", 0) >= 5, timeout=180)
        os.kill(max(job_pids(tmp_path)), signal.SIGKILL)
    finally:
        runner.join(timeout=300)
    result = outcome["result"]
    assert result.status == "succeeded", result.message
    events = RunFolder(Path(result.run_dir)).read_events()
    lost = next(e for e in events if e["kind"] == "worker_lost")
    assert lost["detail"]["lost"] == 1 and lost["detail"]["member_steps"] == [lost["step"]]
    assert any(e["kind"] == "recovered" for e in events)
    assert not any(e["kind"] == "restored" for e in events)   # in place: no checkpoint was read
    alone = run_job(spec_of(text), elastrain_home)
    assert np.abs(predictions_of(alone, spec_of(text)) - predictions_of(result, spec_of(text))).max() <= 1e-5


def test_a_saved_booster_predicts_and_serves_raw_rows(tmp_path, cli, serving):
    """Kind: the model as users take it. A tree model trained on a CSV with string labels is saved as
    XGBoost's UBJSON (nothing pickled); `elastrain predict` and `serve` (a batch of raw rows over
    HTTP) give the same labels and probabilities as `load_model`."""
    from elastrain.serve.app import ServeConfig

    frame = load_breast_cancer(as_frame=True).frame.iloc[:, [*range(6), -1]]
    frame.columns = [name.replace(" ", "_") for name in frame.columns]
    frame["target"] = np.where(frame["target"] == 1, "benign", "malignant")
    frame.to_csv(tmp_path / "cells.csv", index=False)
    (tmp_path / "job.yaml").write_text("name: cells\ndata: {source: 'csv:cells.csv', scaling: none}\n"
                                       "model: {kind: gbdt, rounds: 20, max_depth: 3}\n")
    code, out, err = cli("run", tmp_path / "job.yaml", "--json")
    assert code == 0, err
    model_path = json.loads(out.strip().splitlines()[-1])["model_path"]
    assert sorted(p.name for p in Path(model_path).iterdir()) == ["model.json", "model.ubj", "preprocess.json"]
    assert json.loads((Path(model_path) / "model.json").read_text())["format"] == "xgboost"
    saved = load_model(model_path)
    rows = frame.drop(columns="target").head(50)
    expected = saved.predict(rows)
    assert set(expected) == {"benign", "malignant"}
    assert np.mean(np.array(expected) == frame["target"].head(50).to_numpy()) > 0.85
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = cli("predict", model_path, "--input", tmp_path / "rows.csv", "--proba", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["predictions"] == expected
    assert np.allclose(printed["probabilities"], saved.predict_proba(rows), atol=1e-6)
    url = serving(ServeConfig(model=model_path, auth=False))
    import httpx

    answer = httpx.post(f"{url}/predict", json={"rows": rows.to_dict(orient="records")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected
    code, _, err = cli("optimize", model_path)
    assert code == 2 and "a tree model (format xgboost) is already served as it is" in err, err


@pytest.mark.usefixtures("ray_address")
def test_a_study_of_tree_models_prunes_a_trial_per_round(elastrain_home):
    """Kind: tuning through the same path as every job. A study of two gbdt trials: the one whose
    learning rate barely moves is pruned by ASHA after a few rounds (its group stops at a round
    boundary), the other completes, and the best model is a saved booster."""
    from elastrain.tune.study import Study

    job = {"name": "tune-trees", "data": {"source": "builtin:breast_cancer", "scaling": "none", "split_seed": 0},
           "model": {"kind": "gbdt", "rounds": 200, "max_depth": 3},
           "resources": {"workers": {"min": 1, "max": 1}, "cpus_per_worker": 1},
           "tune": {"space": {"model.learning_rate": {"type": "categorical", "choices": [0.3, 1.0e-6]}},
                    "metric": "val_log_loss", "sampler": "grid", "pruner": "asha", "min_epochs": 1,
                    "reduction_factor": 2, "n_trials": 2, "max_concurrent": 1, "seed": 1}}
    # One trial at a time, the grid seeded to draw the good rate first: the other meets its rungs.
    study = Study(job, name="trees")
    assert study._max_epochs() == 200   # Hyperband's budget: a round is an epoch
    result = study.optimize()
    by_rate = {record.params["model.learning_rate"]: record for record in result.table}
    assert by_rate[1.0e-6].state == "pruned" and by_rate[0.3].state == "complete"
    assert result.best_job == by_rate[0.3].job_id
    assert (Path(RunFolder.of(elastrain_home, result.best_job).read_result()["model_path"]) / "model.ubj").exists()
