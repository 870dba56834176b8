"""`elastrain optimize` on a real trained model: real ONNX export, ONNX Runtime and torchao
quantization, torch-pruning; the choice between candidates as a pure function."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from elastrain.optimize import candidates
from elastrain.optimize.measure import scores_of
from elastrain.optimize.report import CandidateResult, choose
from elastrain.optimize.run import save_candidate
from elastrain.store.model_ref import local_registry
from elastrain.train import load_model
from elastrain.train.artifact import model_files, read_meta
from tests.conftest import REPO, train_digits_model


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A digits MLP trained for 4 epochs: its model directory."""
    return train_digits_model(tmp_path_factory, epochs=4)


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_optimize_measures_every_candidate_and_ships_one_that_keeps_accuracy(cli, digits_model, tmp_path):
    shipped_dir = tmp_path / "shipped"
    code, out, err = cli("optimize", digits_model, "--prune", "0.5", "--fine-tune", "2",
                         "--latency-s", "0.05", "--output", shipped_dir, "--export", "onnx", "--json")
    assert code == 0, err
    report = last_json(out)
    by_name = {c["name"]: c for c in report["candidates"]}
    assert next(iter(by_name)) == "fp32" and set(by_name) == {
        "fp32", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static",
        "pruned-50", "pruned-50-int8-dynamic", "pruned-50-int8-static"}   # --export onnx leaves torchao out
    fp32 = by_name["fp32"]
    assert by_name["onnx-fp32"]["max_abs_diff"] < 1e-4 and by_name["onnx-fp32"]["drop_pt"] == 0   # parity
    assert by_name["onnx-int8-dynamic"]["size_bytes"] < 0.5 * fp32["size_bytes"]
    assert by_name["pruned-50"]["size_bytes"] < 0.6 * by_name["onnx-fp32"]["size_bytes"]
    for candidate in report["candidates"]:
        assert candidate["p50_ms_b1"] > 0 and candidate["p99_ms_b64"] >= candidate["p50_ms_b64"]
        assert 0 <= candidate["value"] <= 1
        assert {"f1_macro", "precision_macro", "recall_macro"} <= set(candidate["metrics"])
    shipped = by_name[report["shipped"]]
    assert shipped["format"] == "onnx" and report["model_path"] == str(shipped_dir)
    assert shipped["drop_pt"] <= 0.5 or report["shipped"] == "onnx-fp32"
    assert report["size_ratio"] == pytest.approx(shipped["size_bytes"] / fp32["size_bytes"], abs=1e-3)
    assert "shipped" in err and "fp32" in err   # the table went to stderr
    # The shipped directory is a model like any other: same predictions over HTTP-free `predict`.
    saved = load_model(shipped_dir)
    assert read_meta(shipped_dir)["optimized"]["candidate"] == report["shipped"]
    digits = load_digits()
    features = tmp_path / "digits.npz"
    np.savez(features, X=digits.data[:50])
    code, out, err = cli("predict", shipped_dir, "--input", features, "--json")
    assert code == 0, err
    assert last_json(out)["predictions"] == saved.predict(digits.data[:50])
    assert (shipped_dir / "optimize_report.json").is_file()


def test_a_registered_model_gets_its_optimized_model_as_a_derived_version(cli, digits_model):
    with local_registry() as (store, owner):
        store.register_model(owner, "digits", digits_model, {"val_accuracy": 0.97}, "spec-hash", "data-print")
        store.set_alias(owner, "digits", "production", 1)
    code, out, err = cli("optimize", "digits@production", "--quantize", "int8-dynamic", "--export", "onnx",
                         "--latency-s", "0.05", "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["registered"] == "digits v2"
    with local_registry() as (store, owner):
        derived = store.model(owner, "digits", 2)
    assert derived.parent_version == 1 and derived.url == summary["model_path"]
    assert (derived.spec_hash, derived.data_fingerprint) == ("spec-hash", "data-print")
    assert derived.size_bytes == sum(f.stat().st_size for f in model_files(derived.url))
    assert derived.metrics["val_accuracy"] == next(c["value"] for c in summary["candidates"]
                                                   if c["name"] == summary["shipped"])
    code, out, err = cli("predict", "digits:2", "--input", _digits_file(derived.url), "--json")
    assert code == 0, err


def test_a_run_is_named_by_its_job_name(cli, tmp_path):
    code, _, err = cli("run", REPO / "examples" / "mlp_digits.yaml", "--set", "train.epochs=2")
    assert code == 0, err
    code, out, err = cli("optimize", "mlp-digits", "--quantize", "none", "--export", "onnx",
                         "--latency-s", "0.05", "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["shipped"] == "onnx-fp32" and "/runs/mlp-digits-" in summary["model_path"]
    code, out, err = cli("predict", "mlp-digits", "--input", _digits_file(tmp_path), "--json")
    assert code == 0 and len(last_json(out)["predictions"]) == 5, err
    code, _, err = cli("predict", "no-such-model", "--input", _digits_file(tmp_path))
    assert code == 2 and "no model 'no-such-model' is registered" in err


def _digits_file(folder):
    path = f"{folder}/digits.npz"
    np.savez(path, X=load_digits().data[:5])
    return path


def test_a_torchao_model_is_saved_and_loaded_back(digits_model, tmp_path):
    source = load_model(digits_model)
    quantized = candidates.torchao_int8(source.model, tmp_path)
    target = save_candidate(quantized, digits_model, read_meta(digits_model), tmp_path / "ao")
    loaded = load_model(target)
    features = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    np.testing.assert_allclose(scores_of(loaded.model, features), scores_of(quantized.network, features), atol=1e-5)
    assert read_meta(target)["format"] == "torchao-int8"


@pytest.mark.parametrize(("args", "message"), [
    (["--quantize", "int4"], "unknown quantization 'int4'"),
    (["--prune", "1.5"], "removes nothing or everything"),
    (["--export", "tflite"], "unknown export format 'tflite'"),
])
def test_bad_options_are_one_line_and_exit_2(cli, digits_model, args, message):
    code, _, err = cli("optimize", digits_model, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_optimized_model_or_a_folder_that_is_none_is_refused(cli, digits_model, tmp_path):
    code, _, err = cli("optimize", tmp_path)
    assert code == 2 and "not a model directory" in err
    source = load_model(digits_model)
    onnx = candidates.onnx_fp32(source.model, 64, tmp_path)
    target = save_candidate(onnx, digits_model, read_meta(digits_model), tmp_path / "onnx")
    code, _, err = cli("optimize", target)
    assert code == 2 and "already optimized (format onnx)" in err


def result(name, b1, b64, drop, size=100):
    return CandidateResult(name, "onnx", "", size, b1, b1, b64, b64, 64 / b64, "accuracy", 0.9, drop, 0.0)


def test_the_choice_is_the_fastest_at_batch_64_that_keeps_accuracy_and_batch_1():
    base = result("fp32", b1=1.0, b64=10.0, drop=0.0)
    assert choose([base, result("a", 0.9, 5.0, 0.2), result("b", 0.8, 4.0, 0.6)]).name == "a"   # b loses too much
    assert choose([base, result("a", 1.1, 2.0, 0.0), result("b", 1.0, 6.0, 0.0)]).name == "b"   # a: slower at b1
    assert choose([base, result("a", 0.5, 4.0, 0.0, 90), result("b", 0.5, 4.0, 0.0, 30)]).name == "b"   # ties: smaller
    kept = choose([base, result("a", 0.5, 12.0, 0.0)], max_drop_pt=0.5)
    assert kept.name == "fp32" and "no candidate was faster" in kept.reason
    assert choose([base, result("a", 0.9, 5.0, 0.9)], max_drop_pt=1.0).name == "a"
