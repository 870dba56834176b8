"""The training options people reach for (keep the best model, early stopping, gradient clipping,
class weights, label smoothing) and the RBF-kernel SVM: against independent references
(scikit-learn, torch's own losses), on any world size, and through a resized elastic job."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_class_weight

from elastrain.data import prepare_dataset
from elastrain.elastic import RunOptions, parse_chaos, run_job
from elastrain.paths import home
from elastrain.runs import RunFolder
from elastrain.spec import load_spec, parse_spec
from elastrain.train import Trainer, fit, load_model
from elastrain.train.losses import class_weight_vector, loss_sum
from tests.conftest import REPO
from tests.test_reference import ThreadGroup

DIGITS = """
name: options
data: {{source: 'builtin:digits'}}
model: {{kind: mlp, hidden: [32]}}
train: {{optimizer: sgd, lr: {lr}, batch_size: 32, epochs: {epochs}, {extra}}}
"""


def digits(lr: float = 0.8, epochs: int = 8, extra: str = ""):
    return parse_spec(DIGITS.format(lr=lr, epochs=epochs, extra=extra))


def events_of(result) -> dict[str, dict]:
    return {e["kind"]: e for e in RunFolder(Path(result.run_dir)).read_events()}


def accuracy_of_saved_model(result, spec) -> float:
    data = prepare_dataset(spec)
    saved = load_model(result.model_path)
    with torch.no_grad():
        predicted = saved.model.eval()(torch.from_numpy(data.x_val)).argmax(dim=1).numpy()
    return float((predicted == data.y_val).mean())


def test_keep_best_saves_the_best_epochs_model_not_the_last():
    spec = digits(lr=1.0, epochs=10, extra="keep_best: f1_macro")
    result = run_job(spec, home())
    values = [p["value"] for p in RunFolder(Path(result.run_dir)).read_metrics()["val_f1_macro"]]
    best = max(values)
    assert len(values) == 10 and values[-1] < best - 0.005   # at this lr the last epoch is not the best
    assert result.metrics["val_f1_macro"] == best
    kept = events_of(result)["best_kept"]["detail"]
    assert kept == {"metric": "val_f1_macro", "value": round(best, 6), "epoch": values.index(best) + 1}
    accuracies = [p["value"] for p in RunFolder(Path(result.run_dir)).read_metrics()["val_accuracy"]]
    assert accuracy_of_saved_model(result, spec) == pytest.approx(accuracies[values.index(best)])


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    # At this learning rate no prediction changes after the first epoch: nothing improves.
    stopped = run_job(digits(lr=1e-9, epochs=20, extra="early_stopping: {patience: 2}"), home())
    assert stopped.status == "succeeded"
    assert (stopped.epochs, stopped.steps) == (3, 3 * 45)   # 1437 training samples in batches of 32
    assert events_of(stopped)["early_stopped"]["detail"] == {
        "metric": "val_accuracy", "best": round(stopped.metrics["val_accuracy"], 6), "best_epoch": 1, "patience": 2}
    full = run_job(digits(lr=1e-9, epochs=4), home())
    assert full.epochs == 4 and "early_stopped" not in events_of(full)


def test_a_spec_naming_an_unknown_metric_or_a_misplaced_option_is_exit_2(cli, tmp_path):
    cases = {
        "train: {keep_best: val_f1_macr}": "did you mean val_f1_macro",
        "train: {early_stopping: {metric: accuracy, patience: 0}}": "patience",
        "model: {kind: mlp, kernel: rbf}": "kernel rbf applies to model svm",
        "model: {kind: svm}\ntrain: {label_smoothing: 0.1}": "label smoothing applies to losses cross_entropy and bce",
        "data: {source: 'builtin:diabetes'}\nmodel: {kind: linear}\ntrain: {class_weights: balanced}":
            "class weights apply to classification",
    }
    for body, expected in cases.items():
        path = tmp_path / "job.yaml"
        path.write_text(body + "\n")
        code, _, err = cli("validate", path)
        assert code == 2 and expected in err, (body, err)
    path.write_text("data: {source: 'builtin:diabetes'}\nmodel: {kind: mlp}\ntrain: {keep_best: val_accuracy}\n")
    code, _, err = cli("run", path)   # the task is the data's: checked when the job starts
    assert code == 2 and "val_accuracy is not measured for a regression model" in err and "Traceback" not in err


def test_clipping_scales_the_mean_gradient_to_the_given_norm():
    unclipped, clipped = (Trainer(spec, prepare_dataset(spec))
                          for spec in (digits(lr=1.0), digits(lr=1.0, extra="clip_grad_norm: 0.01")))
    before = [p.detach().clone() for p in unclipped.model.parameters()]
    unclipped.train_step()
    clipped.train_step()
    step, step_clipped = (torch.cat([(p.detach() - b).ravel()
                                     for p, b in zip(t.model.parameters(), before, strict=True)])
                          for t in (unclipped, clipped))
    assert float(step.norm()) > 0.1   # plain SGD at lr 1: the step is the gradient
    assert float(step_clipped.norm()) == pytest.approx(0.01, rel=1e-4)
    torch.testing.assert_close(step_clipped, step * (0.01 / step.norm()), rtol=1e-4, atol=1e-7)


def test_balanced_class_weights_are_scikit_learns_and_weigh_each_samples_loss():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    counts = np.bincount(y, minlength=3)
    np.testing.assert_allclose(class_weight_vector("balanced", counts, ["a", "b", "c"]),
                               compute_class_weight("balanced", classes=np.arange(3), y=y), rtol=1e-6)
    np.testing.assert_array_equal(class_weight_vector({"c": 4.0, "a": 0.5}, counts, ["a", "b", "c"]), [0.5, 1.0, 4.0])
    outputs, targets = torch.randn(9, 3), torch.from_numpy(y)
    weights = torch.tensor([0.5, 2.0, 4.0])
    per_sample = F.cross_entropy(outputs, targets, reduction="none") * weights[targets]
    torch.testing.assert_close(loss_sum("cross_entropy", outputs, targets, weights), per_sample.sum())
    margins = F.relu(1 - (2 * F.one_hot(targets, 3) - 1) * outputs).sum(dim=1)
    torch.testing.assert_close(loss_sum("hinge", outputs, targets, weights), (margins * weights[targets]).sum())


def test_balanced_class_weights_lift_the_recall_of_a_rare_class(tmp_path):
    # Digits as "is it a 9?": 10 % positives. Unweighted logistic regression stops early at
    # predicting mostly "no"; balanced weights trade precision for the rare class's recall.
    digits_data = load_digits()
    frame = pd.DataFrame(digits_data.data, columns=[f"p{i}" for i in range(64)])
    frame["nine"] = np.where(digits_data.target == 9, "yes", "no")
    frame.to_csv(tmp_path / "nines.csv", index=False)
    recall = {}
    for weights in ("null", "balanced"):
        spec = parse_spec(f"""
data: {{source: 'csv:{tmp_path / "nines.csv"}', target: nine}}
model: {{kind: logistic}}
train: {{optimizer: sgd, lr: 0.01, batch_size: 64, epochs: 2, class_weights: {weights}}}
""")
        recall[weights] = fit(Trainer(spec, prepare_dataset(spec))).metrics["recall_per_class"][1]   # "yes"
    assert recall["balanced"] > recall["null"] + 0.1, recall


def test_a_class_weight_for_a_label_the_target_lacks_is_exit_2(cli, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("data: {source: 'builtin:iris'}\nmodel: {kind: softmax}\ntrain: {class_weights: {7: 2.0}}\n")
    code, _, err = cli("run", path)
    assert code == 2 and "class weights name 7, which the target does not hold" in err and "0, 1, 2" in err


def test_label_smoothing_is_torchs_for_cross_entropy_and_softens_bce_targets():
    outputs, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    torch.testing.assert_close(loss_sum("cross_entropy", outputs, targets, label_smoothing=0.2),
                               6 * F.cross_entropy(outputs, targets, label_smoothing=0.2))
    logits, binary = torch.randn(4, 1), torch.tensor([0, 1, 1, 0])
    soft = torch.tensor([0.1, 0.9, 0.9, 0.1])
    torch.testing.assert_close(loss_sum("bce", logits, binary, label_smoothing=0.2),
                               F.binary_cross_entropy_with_logits(logits.squeeze(1), soft, reduction="sum"))


def test_label_smoothing_makes_a_trained_model_less_confident():
    confidence = {}
    for smoothing in (0.0, 0.3):
        spec = digits(lr=0.3, epochs=5, extra=f"label_smoothing: {smoothing}")
        trainer = Trainer(spec, prepare_dataset(spec))
        fit(trainer)
        with torch.no_grad():
            scores = trainer.model.eval()(torch.from_numpy(trainer.data.x_val))
        confidence[smoothing] = float(torch.softmax(scores, dim=1).max(dim=1).values.mean())
    # Smoothing 0.3 over 10 classes makes 0.73 the target probability of the true class.
    assert confidence[0.0] > 0.9 and confidence[0.3] < 0.75, confidence


def test_rbf_svm_matches_scikit_learn_svc_on_breast_cancer():
    spec = load_spec(REPO / "examples" / "svm_rbf_breast_cancer.yaml")
    data = prepare_dataset(spec)
    reference = SVC(kernel="rbf").fit(data.x_train, data.y_train).score(data.x_val, data.y_val)
    outcome = fit(Trainer(spec, data))
    assert abs(outcome.metrics["accuracy"] - reference) <= 0.01, (outcome.metrics["accuracy"], reference)
    linear = parse_spec("data: {source: 'builtin:breast_cancer'}\nmodel: {kind: svm}\n")
    assert spec.model.kernel == "rbf" and linear.model.kernel == "linear"


OPTIONS_SPECS = {
    "options": """
data: {source: 'builtin:wine'}
model: {kind: mlp, hidden: [16]}
train: {optimizer: momentum, lr: 0.2, batch_size: 50, epochs: 12, clip_grad_norm: 0.05, class_weights: balanced,
        label_smoothing: 0.1, keep_best: f1_macro, early_stopping: {patience: 2}}
""",
    "rbf_svm": """
data: {source: 'builtin:wine'}
model: {kind: svm, kernel: rbf, n_components: 200}
train: {optimizer: adam, lr: 0.01, batch_size: 50, epochs: 4, class_weights: {0: 2.0}}
""",
}


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("name", sorted(OPTIONS_SPECS))
def test_the_options_give_the_same_training_on_any_world_size(name, world_size):
    spec = parse_spec(OPTIONS_SPECS[name])
    data = prepare_dataset(spec)
    single = Trainer(spec, data)
    expected = fit(single)
    replicas, outcomes = ThreadGroup(world_size).fit(spec, data)
    for replica, outcome in zip(replicas, outcomes, strict=True):
        assert (replica.step, replica.stopped_early, replica.best) == (single.step, single.stopped_early, single.best)
        assert outcome.metrics == expected.metrics
        for a, b in zip(single.model.parameters(), replica.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)   # float32 addition order only
    if name == "options":   # the case exercises what it names
        assert single.stopped_early and single.best is not None and single.step < single.total_steps


def test_a_replica_resumed_from_a_saved_state_takes_the_same_decisions(tmp_path):
    """A joining worker is synced, and a job resumed, from `state_dict`: the best model so far and
    the early-stopping count must travel with it (through torch.load with weights_only=True)."""
    spec = digits(epochs=30, extra="keep_best: f1_macro, early_stopping: {patience: 3}")
    data = prepare_dataset(spec)
    uninterrupted = Trainer(spec, data)
    expected = fit(uninterrupted)
    first = Trainer(spec, data)
    fit(first, pause_requested=lambda: first.step >= 5 * first.steps_per_epoch + 7)   # mid-epoch 6
    assert first.best is not None and first.best_state is not None and not first.done
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = Trainer(spec, data)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (resumed.best, resumed.watch) == (first.best, first.watch)
    outcome = fit(resumed)
    assert (resumed.step, resumed.best, resumed.stopped_early) == (uninterrupted.step, uninterrupted.best, True)
    assert outcome.metrics == expected.metrics
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.usefixtures("ray_address")
def test_keep_best_and_early_stopping_hold_through_a_resize_of_an_elastic_job():
    spec = digits(epochs=30, extra="keep_best: f1_macro, early_stopping: {patience: 3}")
    spec.resources.workers.max = 2
    result = run_job(spec, home(), options=RunOptions(chaos=parse_chaos("scale=1@step=40")))
    assert result.status == "succeeded" and result.epochs < 30
    events = events_of(result)
    assert {"start", "scale_in", "resized", "early_stopped", "best_kept"} <= set(events)
    assert events["start"]["workers"] == 2
    values = [p["value"] for p in RunFolder(Path(result.run_dir)).read_metrics()["val_f1_macro"]]
    # The kept epoch is `patience` before the last one, and the saved model is that epoch's.
    assert events["best_kept"]["detail"]["epoch"] == len(values) - 3 == result.epochs - 3
    assert result.metrics["val_f1_macro"] == max(values) == values[-4]
    accuracies = [p["value"] for p in RunFolder(Path(result.run_dir)).read_metrics()["val_accuracy"]]
    assert accuracy_of_saved_model(result, spec) == pytest.approx(accuracies[-4])
