"""Reading the Pollux artifact's workloads and application measurements (traces/pollux)."""

import pytest

from elastrain.errors import UserError
from elastrain.sim import load_app, load_apps, load_workload
from tests.conftest import TRACES

POLLUX = TRACES / "pollux"


@pytest.fixture
def pollux():
    """The Pollux traces."""
    return POLLUX


def test_every_workload_has_160_jobs_in_time_order(pollux):
    for number in range(1, 9):
        jobs = load_workload(pollux / "workloads" / f"workload-{number}.csv")
        assert len(jobs) == 160 and [j.time for j in jobs] == sorted(j.time for j in jobs)
    first = load_workload(pollux / "workloads" / "workload-1.csv")
    assert {j.application for j in first} <= {"bert", "cifar10", "deepspeech2", "imagenet", "ncf", "yolov3"}
    assert all(j.num_replicas >= 1 and j.batch_size >= 1 for j in first)


def test_applications_carry_their_measurements_and_batch_limits(pollux):
    apps = load_apps(pollux / "traces")
    assert sorted(apps) == ["bert", "cifar10", "deepspeech2", "imagenet", "ncf", "yolov3"]
    cifar = apps["cifar10"]
    assert (cifar.min_batch_size, cifar.max_batch_size, cifar.max_epochs) == (128, 4096, 100)
    assert {"placement", "local_bsz", "step_time", "sync_time"} <= set(cifar.placements.columns)
    assert {"progress", "iteration", "metric", "grad_sqr", "grad_var"} <= set(cifar.validation[128].columns)
    assert cifar.placements["step_time"].gt(0).all()
    assert apps["yolov3"].min_batch_size == 8 and apps["imagenet"].max_batch_size == 12800


def test_bad_trace_paths_are_clear(tmp_path):
    with pytest.raises(UserError, match="trace file not found"):
        load_workload(tmp_path / "nope.csv")
    (tmp_path / "w.csv").write_text("name,time\nx,1\n")
    with pytest.raises(UserError, match="lacks column"):
        load_workload(tmp_path / "w.csv")
    (tmp_path / "resnet").mkdir()
    with pytest.raises(UserError, match="unknown application"):
        load_app(tmp_path / "resnet")
