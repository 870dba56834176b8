"""Where a worker trains: the CPU, or the CUDA device of a job that asks for GPUs.

Without a GPU (CI) the CUDA path cannot run; what can is checked here on the same code path:
`device: cpu` forced under `gpus_per_worker`, state that is device-free, and a clear refusal
where a GPU is asked for and none is visible. With a GPU, the cross-device resume runs too.
"""

import json
from pathlib import Path

import pytest
import torch

from elastrain.data import prepare_dataset
from elastrain.elastic.checkpoints import CheckpointStore
from elastrain.errors import UserError
from elastrain.spec import parse_spec, validate_spec
from elastrain.train.trainer import Trainer

JOB = ("name: dev\ndata: {source: 'builtin:iris'}\nmodel: {kind: mlp, hidden: [16]}\n"
       "train: {epochs: 2, optimizer: adam, lr: 0.01, batch_size: 16}\n")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in tensors(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in tensors(value)]
    return []


def test_a_gpu_device_needs_gpus():
    with pytest.raises(UserError, match="device is cuda but gpus_per_worker is 0"):
        validate_spec({"resources": {"device": "cuda"}}, "dev")
    assert validate_spec({"resources": {"gpus_per_worker": 1}}, "dev").resources.on_gpu
    assert not validate_spec({"resources": {"gpus_per_worker": 1, "device": "cpu"}}, "dev").resources.on_gpu


@pytest.mark.parametrize("source", DEVICES)
@pytest.mark.parametrize("target", DEVICES)
def test_state_is_device_free_and_resumes_on_any_device(source, target):
    spec = parse_spec(JOB)
    data = prepare_dataset(spec)
    first = Trainer(spec, data, device=source)
    for _ in range(3):
        first.train_step()
    state = first.state_dict()
    assert {t.device.type for t in tensors(state)} == {"cpu"}
    second = Trainer(spec, data, device=target)
    second.load_state_dict(state)
    assert {p.device.type for p in second.model.parameters()} == {target}
    assert all(t.device.type == target for t in tensors(second.optimizer.state_dict()["state"]) if t.dim() > 0)
    report = second.train_step()
    assert report.step == 4 and report.loss == pytest.approx(first.train_step().loss, rel=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_where_none_is_visible_is_one_line(cli, tmp_path):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB + "resources: {gpus_per_worker: 1}\n")
    code, _, err = cli("run", spec_file)
    assert code == 2 and "sees no CUDA device" in err and "resources.device: cpu" in err
    assert "Traceback" not in err


def test_device_cpu_trains_on_the_cpu_under_gpus_per_worker_and_checkpoints_are_device_free(cli, tmp_path):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(JOB + "resources: {gpus_per_worker: 1, device: cpu}\ncheckpoint: {every_steps: 5}\n")
    code, out, err = cli("run", spec_file, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    loaded = CheckpointStore(str(Path(result["run_dir"]) / "checkpoints")).latest()
    assert loaded is not None and {t.device.type for t in tensors(loaded.state)} == {"cpu"}
