"""`elastrain prepare`: statistics merged exactly across blocks, the same shards on 1 and 3 Ray Data
workers, features equal to scikit-learn's, and blanks and unseen levels as documented."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from bench import mixed_table
from elastrain import load_model
from elastrain.data.plan import MISSING_LEVEL, UNKNOWN_LEVEL, PreparePlan
from elastrain.data.prepared import PLAN_FILE, PreparedManifest
from elastrain.errors import UserError
from elastrain.prep.fit import block_stats, merge_all, plan_of, validation_rows
from elastrain.serve.app import ServeConfig
from elastrain.spec import validate_spec

NUMERIC, CATEGORICAL = mixed_table.NUMERIC, list(mixed_table.CATEGORICAL)
COLUMNS = [*NUMERIC, *CATEGORICAL, "label"]
REPOSITORY = Path(__file__).resolve().parents[1]


def job(source: str, **columns) -> dict:
    spec = mixed_table.spec(source)
    spec["data"]["columns"] |= columns
    return spec


def test_statistics_merge_exactly_across_blocks():
    table = mixed_table.table(5_000, seed=1)
    spec = validate_spec(job("csv:unused.csv"), "test")
    args = (NUMERIC, CATEGORICAL, "label", 0, 0.2)
    whole = block_stats(table, *args)
    for cuts in ([1_000, 1_001, 4_999], [17, 2_500], list(range(250, 5_000, 250))):
        bounds = [0, *cuts, table.num_rows]
        merged = merge_all([block_stats(table.slice(a, b - a), *args) for a, b in itertools.pairwise(bounds)])
        assert (merged.rows, merged.validation, merged.no_target) == (whole.rows, whole.validation, whole.no_target)
        assert merged.levels == whole.levels and merged.blanks == whole.blanks and merged.targets == whole.targets
        for name in NUMERIC:
            assert merged.moments[name].count == whole.moments[name].count
            assert merged.moments[name].mean == pytest.approx(whole.moments[name].mean, rel=1e-13)
            assert merged.moments[name].m2 == pytest.approx(whole.moments[name].m2, rel=1e-12)
        plan = plan_of(merged, spec, NUMERIC, CATEGORICAL, 0)
        assert plan.categorical[0].levels == (*sorted(mixed_table.CATEGORICAL["color"]), MISSING_LEVEL)


def test_unseen_level_and_min_frequency_at_transform():
    table = mixed_table.table(4_000, seed=2)
    stats = block_stats(table, NUMERIC, CATEGORICAL, "label", 0, 0.2)
    rare = validate_spec(job("csv:unused.csv", color={"min_frequency": 100, "unknown": "level"}), "test")
    plan = plan_of(stats, rare, NUMERIC, CATEGORICAL, 0)
    color = plan.categorical[0]
    assert "violet" not in color.levels and color.unknown_slot   # 1 % of rows: below 100 training rows
    assert f"color={UNKNOWN_LEVEL}" in plan.feature_names
    raw = pa.table({**{name: [1.0, 2.0] for name in NUMERIC}, "x0": [1.0, None], "color": ["violet", "ochre"],
                    "size": ["S", "XXL"], "city": ["city01", "city02"]})
    features = plan.features(raw)
    start = len(plan.numeric)
    unknown = start + color.width - 1
    assert features[:, unknown].tolist() == [1.0, 1.0]   # a rare level and an unseen one: the unknown slot
    x0 = plan.numeric[0]
    assert features[1, 0] == np.float32((x0.fill - x0.mean) / x0.std) == np.float32(0)   # a blank: the mean
    size = plan.categorical[1]
    size_start = start + color.width
    assert features[1, size_start:size_start + size.width].sum() == 0   # an unseen size, unknown: ignore
    assert PreparePlan.from_json(plan.to_json()) == plan


def write_csv_parts(folder, table: pa.Table, parts: int) -> None:
    import pyarrow.csv as pcsv

    step = -(-table.num_rows // parts)
    for index in range(parts):
        pcsv.write_csv(table.slice(index * step, step), folder / f"part-{index}.csv")


def read_split(folder, split: str) -> tuple[np.ndarray, np.ndarray]:
    manifest = PreparedManifest.read(str(folder))
    table = pa.concat_tables([pq.read_table(folder / name) for name in getattr(manifest, split)])
    return np.column_stack([table.column(f"f{j}").to_numpy() for j in range(table.num_columns - 1)]), \
        table.column("label").to_numpy()


@pytest.mark.usefixtures("ray_address")
def test_prepared_shards_equal_sklearn_and_the_same_on_1_and_3_workers(tmp_path, cli):
    table = mixed_table.table(30_000, seed=3)
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv_parts(raw, table, 3)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job(f"csv:{raw}/part-*.csv")))
    results = {}
    for workers in (1, 3):
        code, _, err = cli("prepare", spec, "--out", tmp_path / f"out{workers}", "--workers", workers)
        assert code == 0, err
        results[workers] = read_split(tmp_path / f"out{workers}", "train"), read_split(tmp_path / f"out{workers}",
                                                                                       "validation")
    for a, b in zip(results[1], results[3], strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    (train_x, train_y), (val_x, _) = results[1]
    validation = validation_rows(table, COLUMNS, 0, 0.2)
    frame = table.to_pandas()
    reference = mixed_table.sklearn_reference()
    expected = reference.fit(frame[~validation]).transform(frame[~validation])
    assert train_x.shape == expected.shape and len(val_x) == validation.sum()
    assert np.abs(train_x - expected).max() < 1e-6
    assert np.array_equal(train_y, frame["label"][~validation].to_numpy())
    assert np.abs(val_x - reference.transform(frame[validation])).max() < 1e-6
    plan = PreparePlan.from_json((tmp_path / "out1" / PLAN_FILE).read_text())
    assert plan.classes == (0, 1)
    metrics = {}
    for workers in (1, 3):   # a job on each prepared folder: the same model
        trained = tmp_path / f"train{workers}.yaml"
        source = f"prepared:{tmp_path}/out{workers}"
        trained.write_text(yaml.safe_dump({"name": "on-prepared", "data": {"source": source},
                                           "model": {"kind": "mlp", "hidden": [16]},
                                           "train": {"epochs": 2, "batch_size": 256, "seed": 0}}))
        code, out, err = cli("run", trained, "--json")
        assert code == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        metrics[workers], model_path = result["metrics"], result["model_path"]
    assert metrics[1] == metrics[3] and metrics[1]["val_accuracy"] > 0.7
    saved = load_model(model_path)   # the plan travels with the model: raw rows in, blanks and all
    raw = frame[validation].drop(columns="label")
    assert raw.isna().any().any()
    assert saved.predict(raw) == saved.predict_features(val_x)
    unseen = raw.head(3).assign(color="ochre", x3=[None, "", 1.5])   # an unseen level is all zeros
    with pytest.raises(UserError, match="column 'x3' is blank"):   # x3's policy is error
        saved.predict(unseen)
    assert len(saved.predict(unseen.assign(x3=1.5))) == 3


@pytest.mark.usefixtures("ray_address")
def test_a_blank_where_the_policy_is_error_names_file_line_and_column(tmp_path, cli):
    table = mixed_table.table(2_000, seed=4)   # x0 has blanks; its default policy is error
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv_parts(raw, table, 2)
    first = int(np.argmax(np.isnan(table.column("x0").to_numpy(zero_copy_only=False))))
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job(f"csv:{raw}/part-*.csv", x0={"missing": "error"})))
    code, _, err = cli("prepare", spec, "--out", tmp_path / "out")
    assert code == 2
    line = err.strip().replace("\n", " ")
    assert "column 'x0' is blank at line" in line and f"line {first + 2} " in line and "part-0.csv" in line
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "train").exists()


def sms_spam(folder) -> str:
    """The SMS Spam Collection as a CSV with a header (text, label), for `elastrain prepare`."""
    import pandas as pd

    frame = pd.read_csv(REPOSITORY / "datasets" / "sms-spam" / "SMSSpamCollection", sep="\t", quoting=3,
                        names=["label", "text"])
    path = folder / "sms.csv"
    frame[["text", "label"]].to_csv(path, index=False)
    return str(path)


@pytest.mark.usefixtures("ray_address")
def test_a_text_column_becomes_token_ids_of_a_tokenizer_trained_on_it(tmp_path, cli):
    spec = tmp_path / "job.yaml"
    text = {"type": "text", "text": {"vocab_size": 2000, "max_length": 24}}
    spec.write_text(yaml.safe_dump({"name": "sms", "data": {"source": f"csv:{sms_spam(tmp_path)}", "target": "label",
                                                            "columns": {"text": text}},
                                    "model": {"kind": "mlp", "hidden": [8]}}))
    for workers in (1, 2):
        code, _, err = cli("prepare", spec, "--out", tmp_path / f"out{workers}", "--workers", workers)
        assert code == 0, err
    for split in ("train", "validation"):   # BPE, the default: the same tokenizer, the same ids
        assert all(np.array_equal(a, b) for a, b in zip(read_split(tmp_path / "out1", split),
                                                       read_split(tmp_path / "out2", split), strict=True))
    (tmp_path / "out1").rename(tmp_path / "out")
    plan = PreparePlan.from_json((tmp_path / "out" / PLAN_FILE).read_text())
    (fit,) = plan.text
    assert fit.segment == "none" and 500 < fit.vocabulary <= 2000   # English: no segmentation
    train_x, train_y = read_split(tmp_path / "out", "train")
    assert train_x.shape[1] == 24 and set(train_y) == {"ham", "spam"} and len(train_x) > 4000
    assert train_x.min() == 0 and train_x.max() < fit.vocabulary and (train_x[:, 0] > 1).all()
    ids = plan.features(pa.table({"text": ["FREE entry to win a prize", "ζζζ", None]}))
    assert ids[1, 0] == 1 and set(ids[1][ids[1] != 0]) == {1}   # unseen characters: [UNK], then padding
    assert (ids[2] == 0).all() and (ids[0, :5] > 1).all()   # a blank text: all padding


def test_chinese_text_is_segmented_by_jieba_or_by_character():
    from elastrain.data.text import choose_segmentation, encode, segment, train_tokenizer

    sentences = ["我们今天去北京看升旗", "这个地方的人真的很友好", "北京的天气今天很好"] * 20
    assert choose_segmentation(sentences) == "jieba"
    words = segment(sentences[:1], "jieba")[0].split()
    assert "北京" in words and "今天" in words   # jieba's words, not characters
    assert segment(sentences[:1], "char")[0].split()[:2] == ["我", "们"]
    tokenizer = train_tokenizer(iter([segment(sentences, "jieba")]), "wordpiece", 100, True)
    assert (encode(tokenizer, segment(["北京今天"], "jieba"), 4)[0, :2] > 1).all()


@pytest.mark.usefixtures("ray_address")
@pytest.mark.parametrize("encoder", ["bag", "transformer"])
def test_text_models_learn_spam_from_a_prepared_folder_and_take_raw_text(tmp_path, cli, serving, encoder):
    spec = tmp_path / "prepare.yaml"
    text = {"type": "text", "text": {"vocab_size": 3000, "max_length": 40}}
    spec.write_text(yaml.safe_dump({"name": "sms", "data": {"source": f"csv:{sms_spam(tmp_path)}", "target": "label",
                                                            "columns": {"text": text}}}))
    assert cli("prepare", spec, "--out", tmp_path / "out")[0] == 0
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": f"sms-{encoder}", "data": {"source": f"prepared:{tmp_path}/out"},
                                   "model": {"kind": "text", "encoder": encoder, "embedding_dim": 32, "layers": 1},
                                   "train": {"epochs": 4, "batch_size": 64, "lr": 0.003, "seed": 0},
                                   "resources": {"workers": {"min": 2, "max": 2}, "cpus_per_worker": 0.5}}))
    code, out, err = cli("run", job, "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["metrics"]["val_accuracy"] > 0.95   # ham alone is 0.87
    saved = load_model(result["model_path"])
    raw = ["WINNER!! You have won a FREE prize, call 09061701461 to claim now", "ok see you at lunch then", ""]
    predicted = saved.predict([{"text": value} for value in raw])
    assert set(predicted) <= {"ham", "spam"} and len(predicted) == 3
    url = serving(ServeConfig(model=result["model_path"], auth=False))   # raw text over HTTP too
    answer = httpx.post(f"{url}/predict", json={"rows": [{"text": value} for value in raw]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == predicted
    assert httpx.post(f"{url}/predict", json={"rows": [{"txt": "hi"}]}).status_code == 422   # no column 'text'
    val_x, _ = read_split(tmp_path / "out", "validation")
    assert len(saved.predict_features(val_x.astype(np.float32))) == len(val_x)


@pytest.mark.usefixtures("ray_address")
def test_a_validation_table_of_its_own_and_skipped_columns(tmp_path, cli):
    table = mixed_table.table(3_000, seed=5)
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv_parts(raw, table, 2)
    spec = tmp_path / "job.yaml"
    job_spec = job("csv:raw/part-0.csv", city={"type": "skip"})   # relative to the spec's folder
    job_spec["data"]["validation_source"] = "csv:raw/part-1.csv"
    spec.write_text(yaml.safe_dump(job_spec))
    assert cli("prepare", spec, "--out", tmp_path / "out")[0] == 0
    manifest = PreparedManifest.read(str(tmp_path / "out"))
    assert (sum(manifest.train_rows), sum(manifest.validation_rows)) == (1_500, 1_500)   # every row, by file
    assert not any(name.startswith("city") for name in manifest.features)
    assert [Path(p).name for p in manifest.inputs] == ["part-0.csv", "part-1.csv"]


@pytest.mark.usefixtures("ray_address")
def test_a_job_on_a_raw_table_with_declarations_is_prepared_first_and_the_folder_reused(tmp_path, cli,
                                                                                     elastrain_home):
    table = mixed_table.table(4_000, seed=6)   # x0 has blanks: only prepare's `mean` policy takes them
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv_parts(raw, table, 2)
    spec = job(f"csv:{raw}/part-*.csv") | {"train": {"epochs": 1, "batch_size": 256, "seed": 0},
                                            "resources": {"workers": {"min": 2, "max": 2}, "cpus_per_worker": 0.5}}
    path = tmp_path / "job.yaml"
    results = []
    for city in ({}, {}, {"type": "skip"}):   # the third job declares another preparation
        spec["data"]["columns"] = {**spec["data"]["columns"], "city": city} if city else spec["data"]["columns"]
        path.write_text(yaml.safe_dump(spec))
        code, out, err = cli("run", path, "--json")
        assert code == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    folders = sorted(manifest.parent for manifest in (elastrain_home / "prepared").glob("*/manifest.json"))
    assert len(folders) == 2   # the second job reused the first's folder; the third prepared its own
    sources = [yaml.safe_load((Path(r["run_dir"]) / "spec.yaml").read_text())["data"]["source"] for r in results]
    assert sources[0] == sources[1] != sources[2] and {s.removeprefix("prepared:") for s in sources} == set(
        map(str, folders))
    assert results[0]["metrics"] == results[1]["metrics"]
    widths = {len(PreparedManifest.read(str(folder)).features) for folder in folders}
    assert widths == {8 + 5 + 5 + 41, 8 + 5 + 5}   # with and without city's 40 levels and its blank
    saved = load_model(results[0]["model_path"])   # raw rows in, x0's blanks take the mean
    assert len(saved.predict(table.slice(0, 50).drop_columns(["label"]).to_pandas())) == 50
