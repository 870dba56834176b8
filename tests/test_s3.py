"""Durable checkpoints on S3: a real S3 API (moto's standalone server on 127.0.0.1) through fsspec.

moto stands in for AWS here: the project's machines are offline, and moto serves the real S3
protocol over HTTP, so s3fs, fsspec and elastrain run unchanged against it.
"""

import json
import secrets

import fsspec
import httpx
import numpy as np
import pytest
import torch

from elastrain.api.server import serving_in_thread
from elastrain.elastic import resume_job, run_job
from elastrain.elastic.checkpoints import CheckpointStore
from elastrain.elastic.collective import free_port
from elastrain.serve.app import ServeConfig, create_serve_app
from elastrain.spec import parse_spec

moto_server = pytest.importorskip("moto.server", reason="moto is not installed (pip install -r requirements.txt)")


@pytest.fixture
def bucket(monkeypatch):
    """An empty bucket on a local S3 server; fsspec's s3:// URLs point there."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": f"http://{host}:{port}", "key": "testing",
                                                   "secret": "testing"})
    name = f"elastrain-test-{secrets.token_hex(4)}"   # moto's state outlives one server
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    yield f"s3://{name}"
    server.stop()


def test_checkpoints_on_s3_are_checked_and_fall_back(bucket):
    store = CheckpointStore(f"{bucket}/ck", keep=2)
    for step in (10, 20, 30):
        store.save(step, {"w": torch.full((3,), float(step)), "step": step})
    assert [info.step for info in store.list()] == [20, 30]
    loaded = store.latest()
    assert loaded.info.step == 30 and torch.equal(loaded.state["w"], torch.full((3,), 30.0))
    s3 = fsspec.filesystem("s3", skip_instance_cache=True)
    newest = f"{bucket}/ck/ckpt-000000030.pt".removeprefix("s3://")
    s3.pipe_file(newest, s3.cat_file(newest)[:100])   # a torn upload
    loaded = CheckpointStore(f"{bucket}/ck").latest()
    assert loaded.info.step == 20 and "ckpt-000000030.pt is corrupt" in loaded.skipped[0]


def test_a_job_checkpoints_to_s3_and_resumes_from_there(bucket, elastrain_home):
    spec = parse_spec(f"""
data: {{source: 'builtin:digits'}}
model: {{kind: mlp, hidden: [32]}}
train: {{optimizer: adam, lr: 0.003, batch_size: 64, epochs: 2}}
checkpoint: {{every_steps: 10, keep: 10, dir: '{bucket}/job'}}
""")
    full = run_job(spec, elastrain_home)
    steps = [info.step for info in CheckpointStore(f"{bucket}/job").list()]
    assert steps == [10, 20, 30, 40]
    # The driver "dies" after step 20: later checkpoints and the result are gone.
    s3 = fsspec.filesystem("s3", skip_instance_cache=True)
    for step in (30, 40):
        for suffix in ("pt", "json"):
            s3.rm_file(f"{bucket}/job/ckpt-{step:09d}.{suffix}".removeprefix("s3://"))
    (elastrain_home / "runs" / full.job_id / "result.json").unlink()
    resumed = resume_job(full.job_id, elastrain_home)
    assert resumed.status == "succeeded" and resumed.metrics == full.metrics and resumed.steps == full.steps


def test_the_server_publishes_models_to_s3_and_predict_reads_them_there(bucket, elastrain_home, tmp_path, cli,
                                                                        ray_address):
    from elastrain.api.service import JobService
    from elastrain.scheduler import FifoPacking
    from elastrain.store import Store, connect
    from tests.conftest import wait_until

    store = Store(connect(f"sqlite:///{tmp_path / 'jobs.db'}"))
    ada, _ = store.create_user("ada")
    spec = parse_spec("data: {source: 'builtin:iris'}\nmodel: {kind: softmax}\ntrain: {epochs: 20, lr: 0.05}")
    store.submit(ada, "iris-1", spec.model_dump(mode="json") | {"name": "iris"})
    service = JobService(store, elastrain_home, FifoPacking(), cpus=1, interval_s=0.05, artifacts=f"{bucket}/art")
    service.start()
    try:
        wait_until(lambda: store.job("iris-1").status == "succeeded")
    finally:
        service.stop()
    [model] = store.models(ada)
    assert model.url == f"{bucket}/art/models/ada/iris/iris-1"
    s3 = fsspec.filesystem("s3", skip_instance_cache=True)
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls(model.url.removeprefix("s3://"))) == [
        "model.json", "model.pt", "preprocess.json"]
    (tmp_path / "x.csv").write_text("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n"
                                    "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    code, out, err = cli("predict", model.url, "--input", tmp_path / "x.csv", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["predictions"] == [0, 2]
    assert model.size_bytes == sum(s3.size(p) for p in s3.ls(model.url.removeprefix("s3://")))
    # `elastrain serve` serves it from there too.
    with serving_in_thread(create_serve_app(ServeConfig(model=model.url, auth=False))) as url:
        answer = httpx.post(f"{url}/predict", json={"rows": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [0, 2] and answer.json()["model_name"] == "iris"


def test_a_job_streams_its_shards_from_s3_every_row_once_per_epoch(bucket, elastrain_home, tmp_path):
    """Parquet shards in a bucket: listed and read through fsspec's s3://, each training row once
    per epoch (the trace of every step's samples), and the job learns."""
    from bench.higgs_like import write_shards
    from elastrain.data.streaming import validation_mask
    from elastrain.elastic.job import RunOptions

    local = tmp_path / "shards"
    written = write_shards(local, 3000, 1000, 250, seed=0)
    s3 = fsspec.filesystem("s3", skip_instance_cache=True)
    for path in written:
        s3.put_file(str(path), f"{bucket}/higgs/{path.name}".removeprefix("s3://"))
    spec = parse_spec(f"""
data: {{source: 'parquet:{bucket}/higgs/part-*.parquet', target: label, shuffle_window: 700}}
model: {{kind: mlp, hidden: [16]}}
train: {{optimizer: adam, lr: 0.01, batch_size: 50, epochs: 2, seed: 4}}
""")
    trace = tmp_path / "trace"
    trace.mkdir()
    result = run_job(spec, elastrain_home, options=RunOptions(trace_dir=str(trace)))
    assert result.status == "succeeded", result.message
    assert result.metrics["val_accuracy"] > 0.7
    records = [json.loads(line) for f in trace.glob("*.jsonl") for line in f.read_text().splitlines()]
    train_ids = sorted(np.flatnonzero(~validation_mask(np.arange(3000), 4, 0.2)).tolist())
    for epoch in (0, 1):
        consumed = [i for r in records if r["epoch"] == epoch for i in r["indices"]]
        assert sorted(consumed) == train_ids
