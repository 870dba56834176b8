"""The data layer: sources, the seeded split, preprocessing fitted on training rows only."""

import gzip
import json
import struct

import numpy as np
import pandas as pd
import pytest

from elastrain.data import Preprocessor, prepare_dataset, read_prediction_input
from elastrain.errors import UserError
from elastrain.spec import load_spec, parse_spec


def dataset(yaml_text: str, folder=None):
    """The prepared data of a spec; with `folder`, the spec is a file there (paths are relative to it)."""
    if folder is None:
        return prepare_dataset(parse_spec(yaml_text))
    (folder / "job.yaml").write_text(yaml_text)
    return prepare_dataset(load_spec(folder / "job.yaml"))


def test_the_split_is_seeded_and_stratified():
    first = dataset("data: {source: 'builtin:iris', split_seed: 3}\nmodel: {kind: softmax}")
    again = dataset("data: {source: 'builtin:iris', split_seed: 3}\nmodel: {kind: softmax}")
    other = dataset("data: {source: 'builtin:iris', split_seed: 4}\nmodel: {kind: softmax}")
    assert np.array_equal(first.x_val, again.x_val) and not np.array_equal(first.x_val, other.x_val)
    assert len(first.y_val) == 30 and np.bincount(first.y_val).tolist() == [10, 10, 10]
    assert first.task == "classification" and first.n_classes == 3 and first.input_shape == (4,)


def test_standardization_is_fitted_on_the_training_split_only():
    data = dataset("data: {source: 'builtin:wine'}\nmodel: {kind: softmax}")
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(data.x_val.mean(axis=0), 0, atol=1e-3)


def test_minmax_scaling_and_global_scaling_for_images():
    data = dataset("data: {source: 'builtin:breast_cancer', scaling: minmax}\nmodel: {kind: logistic}")
    assert data.x_train.min() == 0 and np.allclose(data.x_train.max(axis=0), 1)
    digits = dataset("data: {source: 'builtin:digits'}")
    assert digits.input_shape == (1, 8, 8) and len(digits.preprocessor.center) == 1
    assert digits.x_train.mean() == pytest.approx(0, abs=1e-4) and digits.x_train.std() == pytest.approx(1, abs=1e-3)


def test_regression_targets_stay_values():
    data = dataset("data: {source: 'builtin:diabetes'}\nmodel: {kind: linear}")
    assert data.task == "regression" and data.n_classes is None and data.y_train.dtype == np.float32
    assert data.y_train.min() >= 25 and data.y_train.max() <= 346


def write_table(tmp_path, n=200):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"size": rng.normal(5, 2, n), "color": rng.choice(["red", "green", "blue"], n),
                          "label": rng.choice(["cat", "dog"], n)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    return frame


def test_categorical_columns_are_one_hot_encoded_and_labels_decoded(tmp_path):
    write_table(tmp_path)
    spec = "data: {source: 'csv:t.csv', target: label}\nmodel: {kind: logistic}"
    data = dataset(spec, tmp_path)
    pre = data.preprocessor
    assert pre.feature_names == ["size", "color=blue", "color=green", "color=red"]
    assert pre.classes == ["cat", "dog"] and pre.decode(np.array([1, 0])) == ["dog", "cat"]
    assert set(np.unique(data.x_train[:, 1:])) == {0.0, 1.0}   # one-hot columns are not scaled
    from_parquet = dataset(spec.replace("csv:t.csv", "parquet:t.parquet"), tmp_path)
    assert np.array_equal(from_parquet.x_train, data.x_train)
    unseen = pd.DataFrame({"size": [5.0], "color": ["purple"]})
    with pytest.raises(UserError, match="column 'color' has the category 'purple' at data row 1"):
        pre.transform_frame(unseen)


def test_the_preprocessor_survives_json_and_reproduces_the_training_input(tmp_path):
    frame = write_table(tmp_path)
    data = dataset("data: {source: 'csv:t.csv', target: label, validation_fraction: 0.5}\nmodel: {kind: logistic}",
                   tmp_path)
    restored = Preprocessor.from_dict(json.loads(json.dumps(data.preprocessor.to_dict())))
    again = restored.transform_frame(frame.drop(columns="label"))
    train_rows = [row for row in again.tolist() if row in data.x_train.tolist()]
    assert len(train_rows) >= len(data.x_train)
    frame.drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    assert np.array_equal(read_prediction_input(tmp_path / "new.csv", restored), again)


def _write_idx(path, magic, dims, values, zipped):
    opener = gzip.open if zipped else open
    with opener(path, "wb") as handle:
        handle.write(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(values))


@pytest.mark.parametrize("zipped", [True, False])
def test_idx_files_gzipped_or_raw(tmp_path, zipped):
    suffix = ".gz" if zipped else ""
    images = np.arange(6 * 3 * 2) % 256
    _write_idx(tmp_path / f"x-images-idx3-ubyte{suffix}", 0x0803, (6, 3, 2), images.tolist(), zipped)
    _write_idx(tmp_path / f"x-labels-idx1-ubyte{suffix}", 0x0801, (6,), [0, 1, 0, 1, 0, 1], zipped)
    data = dataset(f"data: {{source: 'idx:{tmp_path}', validation_fraction: 0.5, scaling: none}}")
    assert data.input_shape == (1, 3, 2) and data.n_classes == 2
    together = np.concatenate([data.x_train, data.x_val])
    assert sorted(together.sum(axis=1).tolist()) == sorted(images.reshape(6, 6).sum(axis=1).tolist())


def test_idx_reads_the_mnist_test_set(mnist_dir):
    data = dataset(f"data: {{source: 'idx:{mnist_dir}', split_seed: 0}}\nmodel: {{kind: cnn}}")
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10
    assert len(data.y_train) == 8000 and len(data.y_val) == 2000


def test_npz_images_and_missing_keys(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.random((40, 5, 5)), y=np.arange(40) % 4)
    data = dataset("data: {source: 'npz:d.npz'}\nmodel: {kind: cnn}", tmp_path)
    assert data.input_shape == (1, 5, 5) and data.n_classes == 4 and data.x_train.shape == (32, 25)
    with pytest.raises(UserError, match=r"no array named 'labels'.*npz_keys"):
        dataset("data: {source: 'npz:d.npz', npz_keys: [X, labels]}", tmp_path)


def test_synthetic_data_has_the_asked_size():
    data = dataset("data: {source: 'synthetic:classification', synthetic: {n_samples: 300, n_features: 7, "
                   "n_classes: 3}}\nmodel: {kind: softmax}")
    assert data.x_train.shape == (240, 7) and data.n_classes == 3
    reg = dataset("data: {source: 'synthetic:regression', synthetic: {n_samples: 100, n_features: 3}}\n"
                  "model: {kind: linear}")
    assert reg.task == "regression" and reg.x_val.shape == (20, 3)


@pytest.mark.parametrize(("rows", "model", "message"), [
    (["a,target", *[f"{i},{i / 3}" for i in range(20)]], "softmax", "classification needs class labels"),
    (["a,target", *[f"{i},1" for i in range(20)]], "softmax", "only one class"),
    (["a,target", *[f"{i},{i % 2}" for i in range(20)], ",1"], "softmax", "column 'a' has a missing value.*line 22"),
    (["a,target", *[f"{i},c{i % 2}" for i in range(20)]], "linear", "regression needs a numeric target"),
])
def test_targets_and_values_that_do_not_fit(tmp_path, rows, model, message):
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=message):
        dataset(f"data: {{source: 'csv:d.csv'}}\nmodel: {{kind: {model}}}", tmp_path)
