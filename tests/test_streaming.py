"""Sharded data streamed to the workers (`elastrain.data.streaming`): Parquet shards on local disk,
read piece by piece, every training row exactly once per epoch across resizes, a kill and a
resume, the statistics equal to a single-process fit, and bad shards refused naming the shard."""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from bench.higgs_like import write_shards
from elastrain.data.rows import open_source
from elastrain.data.stream_order import epoch_plan
from elastrain.data.streaming import ShardedSource, validation_mask
from elastrain.elastic.chaos import parse_chaos
from elastrain.elastic.job import RunOptions, resume_job, run_job
from elastrain.errors import UserError
from elastrain.runs import RunFolder
from elastrain.spec import parse_spec
from elastrain.train.learner import build_learner
from tests.conftest import REPO, wait_until
from tests.test_elastic import parameters, worker_processes

ROWS, SHARD_ROWS, GROUP_ROWS = 6000, 1500, 500   # 4 shards of 3 pieces


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, ROWS, SHARD_ROWS, GROUP_ROWS, seed=0)
    return folder


def spec_for(folder: Path, window: int = 2000, epochs: int = 2, max_workers: int = 1, **train):
    train_yaml = ", ".join(f"{k}: {v}" for k, v in ({"optimizer": "adam", "lr": 0.01, "batch_size": 100,
                                                       "epochs": epochs, "seed": 1} | train).items())
    return parse_spec(f"""
name: streamed
data: {{source: 'parquet:{folder}/part-*.parquet', target: label, shuffle_window: {window}}}
model: {{kind: mlp, hidden: [16]}}
train: {{{train_yaml}}}
resources: {{workers: {{min: 1, max: {max_workers}}}, cpus_per_worker: 1, wait_timeout_s: 120}}
""")


def all_rows(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))])
    x = np.stack([table.column(f"f{j}").to_numpy() for j in range(28)], axis=1)
    return x, table.column("label").to_numpy()


def test_the_statistics_pass_equals_a_single_process_fit_on_the_training_rows(shards):
    spec = spec_for(shards)
    source = open_source(spec)
    assert isinstance(source, ShardedSource) and spec.data.manifest is source.manifest
    x, y = all_rows(shards)
    train = ~validation_mask(np.arange(ROWS), source.manifest.seed, spec.data.validation_fraction)
    assert source.n_train == train.sum() and source.n_val == (~train).sum()
    assert 0.15 < source.n_val / ROWS < 0.25
    np.testing.assert_allclose(source.manifest.center, x[train].astype(np.float64).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(source.manifest.scale, x[train].astype(np.float64).std(axis=0), rtol=1e-9)
    assert source.task == "classification" and source.manifest.classes == [0.0, 1.0]
    assert source.class_counts().tolist() == [int((y[train] == 0).sum()), int((y[train] == 1).sum())]
    assert source.preprocessor.columns == [f"f{j}" for j in range(28)]
    assert source.bytes_read == 0   # opening it read no training rows in this process


def test_each_epoch_visits_every_training_row_once_while_the_group_changes_and_reads_the_data_about_once(shards):
    spec = spec_for(shards, window=1200)
    x_all, _ = all_rows(shards)
    manifest = open_source(spec).manifest
    train_ids = np.flatnonzero(~validation_mask(np.arange(ROWS), manifest.seed, spec.data.validation_fraction))
    size = sum(p.stat().st_size for p in shards.glob("part-*.parquet"))
    for worlds in ([2], [3], [1, 3, 2, 1]):
        members = {}
        seen = []
        position, step = 0, 0
        n_train = len(train_ids)
        while position < n_train:
            world = worlds[min(step // 10, len(worlds) - 1)]
            batch = 0
            for rank in range(world):
                source = members.setdefault((world, rank), ShardedSource(spec))
                share = source.share(1, 0, position, 100, rank, world)
                # the rows are the right rows, preprocessed
                expected = (x_all[share.ids] - np.asarray(manifest.center)) / np.asarray(manifest.scale)
                np.testing.assert_allclose(share.x, expected, rtol=1e-5, atol=1e-5)
                seen.append(share.ids)
                batch = share.batch
            position += batch
            step += 1
        ids = np.concatenate(seen)
        assert len(ids) == n_train and (np.sort(ids) == train_ids).all()
        if len(worlds) == 1:   # no resize: every piece read by one member, once
            read = sum(s.bytes_read for s in members.values())
            assert read / size <= 1.2, (worlds, read, size)


def test_a_job_on_shards_trains_in_process_and_learns(shards, elastrain_home):
    result = run_job(spec_for(shards, epochs=3), elastrain_home)
    assert result.status == "succeeded", result.message
    assert result.metrics["val_accuracy"] > 0.75


def test_each_step_reports_the_bytes_the_group_read_for_it(shards):
    """The step's all-reduce carries what each member read since its previous step: over an epoch
    the reports add up to about the data set's size (what the prefetch reads after the last step
    counts in the next)."""
    learner = build_learner(spec_for(shards))
    reports = []
    while not reports or not reports[-1].epoch_done:
        reports.append(learner.train_step())
    size = sum(p.stat().st_size for p in shards.glob("part-*.parquet"))
    reported = sum(r.bytes_read for r in reports)
    assert 0.5 * size < reported <= learner.data.bytes_read <= 1.2 * size
    assert all(r.data_wait_s >= 0 for r in reports) and reports[0].data_wait_s > 0   # the first rows were awaited


@pytest.mark.slow
def test_on_ray_every_row_once_per_epoch_across_a_kill_and_resizes(shards, elastrain_home, tmp_path, ray_address):
    spec = spec_for(shards, window=1500, epochs=4, max_workers=3, batch_size=60)
    chaos = parse_chaos("kill:1@step=40,scale=1@step=80,scale=3@step=120,scale=2@step=170")
    result = run_job(spec, elastrain_home, options=RunOptions(chaos=chaos, trace_dir=str(tmp_path)))
    assert result.status == "succeeded", result.message
    by_step: dict[int, list[dict]] = defaultdict(list)
    for trace in tmp_path.glob("worker-*.jsonl"):
        for line in trace.read_text().splitlines():
            record = json.loads(line)
            by_step[record["step"]].append(record)
    assert sorted(by_step) == list(range(1, result.steps + 1))
    per_epoch = defaultdict(list)
    worlds = set()
    for step in sorted(by_step):
        last = max(r["generation"] for r in by_step[step])
        records = [r for r in by_step[step] if r["generation"] == last]
        worlds.add(records[0]["world_size"])
        computed = [i for r in records for i in r["indices"]]
        assert len(set(computed)) == len(computed) and set(computed) <= set(records[0]["batch"])
        per_epoch[records[0]["epoch"]] += records[0]["batch"]
    assert worlds >= {1, 2, 3}
    manifest = result_manifest(elastrain_home)
    train_ids = np.flatnonzero(~validation_mask(np.arange(ROWS), manifest["seed"], 0.2)).tolist()
    assert sorted(per_epoch) == [0, 1, 2, 3]
    for consumed in per_epoch.values():
        assert sorted(consumed) == train_ids


def result_manifest(home: Path) -> dict:
    spec_file = next(home.glob("runs/*/spec.yaml"))
    return yaml.safe_load(spec_file.read_text())["data"]["manifest"]


def test_an_empty_glob_a_foreign_schema_a_missing_target_and_a_text_column_are_one_line_naming_the_shard(shards,
                                                                                                          tmp_path):
    with pytest.raises(UserError, match="no shards match"):
        open_source(spec_for(tmp_path / "nothing"))
    mixed = tmp_path / "mixed"
    shutil.copytree(shards, mixed)
    pq.write_table(pa.table({"f0": [1.0], "label": [0.0]}), mixed / "part-00009.parquet")
    with pytest.raises(UserError, match="columns differ") as raised:
        open_source(spec_for(mixed))
    assert raised.value.where.endswith("part-00009.parquet")
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    pq.write_table(pa.table({"f0": [1.0, 2.0], "y": [0.0, 1.0]}), lacking / "part-0.parquet")
    with pytest.raises(UserError, match="no target column 'label'"):
        open_source(spec_for(lacking))
    text = tmp_path / "text"
    text.mkdir()
    pq.write_table(pa.table({"f0": [1.0, 2.0], "town": ["a", "b"], "label": [0.0, 1.0]}), text / "part-0.parquet")
    with pytest.raises(UserError, match="column 'town' is string"):
        open_source(spec_for(text))


@pytest.mark.parametrize("damage", ["vanish", "corrupt"])
def test_a_shard_that_vanishes_or_breaks_mid_epoch_fails_the_job_naming_it_and_keeps_the_last_good_state(
        shards, tmp_path, cli, damage):
    """The shards are listed when the job starts (its manifest); one then vanishes or is
    overwritten. Training reaches it mid-epoch: one line naming the shard, exit 1, the state of the
    last step kept."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    spec = spec_for(copy, window=600)
    source = open_source(spec)   # the manifest, as the job's start writes it
    # the shard whose first piece comes last in epoch 0: reached mid-epoch, after steps were taken
    order = epoch_plan(source.train_counts, 1, 0, 600).pieces.tolist()
    first_seen = {source.pieces.where[piece][0]: at for at, piece in reversed(list(enumerate(order)))}
    victim = Path(source.manifest.shards[max(first_seen, key=first_seen.get)])
    if damage == "vanish":
        victim.unlink()
    else:
        victim.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    code, out, err = cli("run", spec_file, "--json")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and result["status"] == "failed", err
    assert str(victim) in result["message"] and "Traceback" not in err
    assert result["steps"] > 0   # it failed mid-epoch, not before training
    kept = list(Path(result["run_dir"]).glob("checkpoints/last-good-step-*.pt"))
    assert [p.name for p in kept] == [f"last-good-step-{result['steps']}.pt"]


@pytest.mark.slow
def test_after_the_driver_is_sigkilled_resume_continues_at_the_position_as_if_uninterrupted(
        shards, elastrain_home, tmp_path, ray_address):
    """A job on shards, on 2 workers, checkpoints every 8 steps; its driver is SIGKILLed; `resume`
    continues from the newest checkpoint's position in the epoch and ends with the parameters of an
    uninterrupted run: the same batches, each row once."""
    spec = spec_for(shards, epochs=3, max_workers=2, batch_size=60)
    spec.checkpoint.every_steps = 8
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ELASTRAIN_HOME": str(elastrain_home)}
    driver = subprocess.Popen([sys.executable, "-m", "elastrain", "run", str(spec_file), "--json"], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list(elastrain_home.glob("runs/*/checkpoints/ckpt-*.json"))) >= 3)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    wait_until(lambda: not worker_processes())
    run_dir = next(elastrain_home.glob("runs/*"))
    assert not (run_dir / "result.json").exists()
    resumed = resume_job(run_dir.name, elastrain_home)
    uninterrupted = run_job(parse_spec(spec_file.read_text()), elastrain_home)
    assert resumed.status == "succeeded" and resumed.steps == uninterrupted.steps
    assert any(e["kind"] == "resume" and e["detail"]["from_checkpoint"] > 0 for e in RunFolder(run_dir).read_events())
    ours, theirs = parameters(resumed), parameters(uninterrupted)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=1e-6)


def test_npy_shard_pairs_stream_in_pieces_with_a_regression_target(tmp_path, elastrain_home):
    """`npy:GLOB` reads NAME.x.npy (features) with NAME.y.npy (targets) beside it, in runs of rows
    (ranged reads); a float target with many values is a regression."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=6)
    for index in range(3):
        x = rng.normal(size=(900, 6)).astype(np.float32)
        np.save(tmp_path / f"part-{index}.x.npy", x)
        np.save(tmp_path / f"part-{index}.y.npy", x @ weights + rng.normal(scale=0.1, size=900))
    spec = parse_spec(f"""
data: {{source: 'npy:{tmp_path}/part-*.x.npy', shuffle_window: 1000}}
model: {{kind: linear}}
train: {{optimizer: adam, lr: 0.05, batch_size: 64, epochs: 6}}
""")
    source = open_source(spec)
    assert source.task == "regression" and source.input_shape == (6,) and source.n_train + source.n_val == 2700
    result = run_job(spec, elastrain_home)
    assert result.status == "succeeded", result.message
    assert result.metrics["val_r2"] > 0.95
    (tmp_path / "part-1.y.npy").unlink()
    with pytest.raises(UserError, match=r"part-1\.y\.npy"):
        open_source(spec.model_copy(update={"data": spec.data.model_copy(update={"manifest": None})}))
