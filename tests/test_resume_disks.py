"""Resume on the data a job started on, full and read-only disks, and what Ctrl-C promises
(issue 27, findings 9, 10 and 14). The disks are real: small tmpfs mounts (root only)."""

import time
from pathlib import Path

import numpy as np
import pytest

from elastrain.elastic import RunOptions, resume_job, run_job
from elastrain.elastic.checkpoints import CheckpointStore
from elastrain.elastic.control import JobControl
from elastrain.errors import JobInterrupted
from elastrain.runs import RunFolder
from elastrain.spec import load_spec, parse_spec
from tests.conftest import tmpfs

CSV_JOB = """
name: resume-test
data: {source: 'csv:train.csv', target: label}
model: {kind: mlp, hidden: [16]}
train: {optimizer: momentum, lr: 0.05, batch_size: 20, epochs: 4, seed: 1}
"""
EVERY_5 = "checkpoint: {every_steps: 5, keep: 2}\n"


def write_csv(path: Path, rows: int = 120, seed: int = 0) -> None:
    """A small two-class table: features a, b, c and a label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).round(4)
    lines = ["a,b,c,label"] + [f"{a},{b},{c},{int(a + b > 0)}" for a, b, c in x]
    path.write_text("\n".join(lines) + "\n")


class InterruptAfterFirstEpoch:
    """An epoch gate that interrupts the job after its first epoch, as Ctrl-C does (the job's
    loop asks the worker to pause while the gate holds it, so the job stops at the next step)."""

    def __init__(self, control: JobControl) -> None:
        self.control = control

    def __call__(self, epoch: int, metrics: dict) -> bool:
        self.control.interrupt()
        time.sleep(0.5)   # the job's loop polls every 50 ms: it sees the request before the next step
        return False


def interrupted(spec, home: Path) -> tuple[str, str]:
    """Run `spec` in this process until it is interrupted after its first epoch; its job id and
    the interrupt's message."""
    control = JobControl()
    with pytest.raises(JobInterrupted) as stopped:
        run_job(spec, home, options=RunOptions(control=control, gate=InterruptAfterFirstEpoch(control)))
    [folder] = [f for f in RunFolder.all(home) if f.read_result() is None]
    return folder.job_id, str(stopped.value)


@pytest.fixture
def started_in(tmp_path, monkeypatch):
    """Folder `a` holds the job's spec and data and is the working directory (a relative spec path);
    folder `b` holds another `train.csv` of other columns."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_csv(a / "train.csv")
    (b / "train.csv").write_text("x,y\n1,2\n3,4\n")
    monkeypatch.chdir(a)
    return a, b


def test_resume_from_another_folder_trains_on_the_data_the_job_started_on(started_in, elastrain_home, monkeypatch):
    """Kind 9 (resume on other data): the run folder records the data's absolute path, so a resume
    from a folder with its own `train.csv` still trains on the file the job started on."""
    a, b = started_in
    (a / "job.yaml").write_text(CSV_JOB + EVERY_5)
    spec = load_spec(Path("job.yaml"))   # relative: as `elastrain run job.yaml` in its folder
    job_id, message = interrupted(spec, elastrain_home)
    folder = RunFolder.find(elastrain_home, job_id)
    assert folder.read_spec().data.source == f"csv:{a / 'train.csv'}"
    # Kind 14: an interrupted job with checkpoints is promised what resume will do.
    step = CheckpointStore(str(folder.checkpoints)).list()[-1].step
    assert f"continues it from its last checkpoint (step {step})" in message
    monkeypatch.chdir(b)
    resumed = resume_job(job_id, elastrain_home)
    monkeypatch.chdir(a)
    uninterrupted = run_job(load_spec(Path("job.yaml")), elastrain_home)
    assert resumed.status == uninterrupted.status == "succeeded"
    assert resumed.data_fingerprint == uninterrupted.data_fingerprint and resumed.steps == uninterrupted.steps


@pytest.mark.parametrize("change", ["rows added", "same size", "removed"])
def test_resume_refuses_data_that_changed_since_the_job_started(started_in, elastrain_home, cli, change):
    """Kind 9 (resume on other data): a data file changed since the job started is refused by
    `elastrain resume` in one line naming the file and what changed (no `size mismatch` traceback,
    no ZeroDivisionError, no silent resume); put back, the job resumes."""
    a, _ = started_in
    (a / "job.yaml").write_text(CSV_JOB + EVERY_5)
    job_id, _ = interrupted(load_spec(Path("job.yaml")), elastrain_home)
    data = a / "train.csv"
    original = data.read_bytes()
    if change == "rows added":
        data.write_bytes(original + b"0.5,0.5,0.5,1\n")
        said = f"it has {len(original) + 14} bytes, the job started on {len(original)}"
    elif change == "same size":
        data.write_bytes(original.replace(b",1\n", b",0\n", 1))
        said = "its content changed"
    else:
        data.unlink()
        said = "the file is gone"
    code, _, err = cli("resume", job_id)
    assert code == 2 and "Traceback" not in err, err
    line = " ".join(err.split())
    assert f"{data}: the data changed since job {job_id} started: {said}" in line, err
    data.write_bytes(original)
    code, _, err = cli("resume", job_id)
    assert code == 0, err


def test_an_interrupted_run_without_checkpoints_says_resume_starts_again_at_step_0(started_in, elastrain_home, cli):
    """Kind 14 (Ctrl-C without a checkpoint section): the interrupt does not promise "its last
    checkpoint" but says that none was kept and how to keep them; `resume` then says it starts
    again at step 0 instead of doing so silently."""
    a, _ = started_in
    (a / "job.yaml").write_text(CSV_JOB)
    job_id, message = interrupted(load_spec(Path("job.yaml")), elastrain_home)
    assert "last checkpoint" not in message
    assert f"no checkpoint was kept, so `elastrain resume {job_id}` would start again at step 0" in message
    assert "checkpoint: {every_steps: 100}" in message
    code, _, err = cli("resume", job_id)
    line = " ".join(err.split())
    assert code == 0 and f"warning: job {job_id} kept no checkpoint: it starts again at step 0" in line, err
    start = next(e for e in RunFolder.find(elastrain_home, job_id).read_events() if e["kind"] == "resume")
    assert start["detail"]["from_checkpoint"] is None


WIDE_JOB = """
name: disk-test
data: {source: 'builtin:digits'}
model: {kind: mlp, hidden: [256]}
train: {optimizer: momentum, lr: 0.05, batch_size: 60, epochs: 2, seed: 1}
"""


def checkpoint_bytes(spec, home: Path) -> int:
    """The size of a checkpoint of `spec`'s training state, as a run of it writes one."""
    result = run_job(spec, home)
    return CheckpointStore(str(Path(result.run_dir) / "checkpoints")).list()[-1].bytes


class Warnings:
    """A progress sink that keeps the warnings a job shows."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def phase(self, text: str) -> None: ...
    def start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def advance(self, step: int, loss: float, workers: int) -> None: ...
    def epoch(self, epoch: int, metrics: dict) -> None: ...

    def warn(self, message: str) -> None:
        self.messages.append(message)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_checkpoint_disk_warns_keeps_the_last_good_checkpoint_and_training_goes_on(tmp_path, elastrain_home):
    """Kind 10 (disk full): checkpoints on a tmpfs with room for one. The writes that fail warn in
    one line naming the path and the bytes needed, leave no `.tmp` behind, keep the checkpoint
    written before, and the job trains to its end and saves its model (it lost its model and
    ended "lost" with an OSError and a `KeyError: 'status'` traceback)."""
    spec = parse_spec(WIDE_JOB + "checkpoint: {every_steps: 5, keep: 3}\n")
    size = checkpoint_bytes(spec, elastrain_home)
    with tmpfs(tmp_path / "small", f"size={size * 3 // 2}") as disk:
        spec.checkpoint.dir = str(disk)
        progress = Warnings()
        result = run_job(spec, elastrain_home, progress=progress)
        warnings = progress.messages
        assert result.status == "succeeded" and Path(result.model_path, "model.pt").is_file()
        events = RunFolder(Path(result.run_dir)).read_events()
        written = [e["step"] for e in events if e["kind"] == "checkpoint"]
        failed = [e for e in events if e["kind"] == "checkpoint_failed"]
        assert written and failed and len(warnings) == len(failed)
        step, detail = failed[0]["step"], failed[0]["detail"]
        assert detail["message"].startswith(f"checkpoint of step {step} not written to {disk}/ckpt-{step:09d}.pt: "
                                            f"No space left on device (it needs {detail['bytes']} bytes; ")
        assert "training goes on, earlier checkpoints are kept" in warnings[0]
        assert leftovers(disk) == []
        assert CheckpointStore(str(disk)).latest().info.step == written[-1]


def test_a_read_only_checkpoint_folder_warns_and_the_run_succeeds(tmp_path, cli):
    """Kind 10 (read-only disk): every checkpoint write fails with EROFS; `elastrain run` warns in
    one line per checkpoint naming the path, trains to its end and exits 0 without a traceback."""
    spec_file = tmp_path / "job.yaml"
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        spec_file.write_text(WIDE_JOB + f"checkpoint: {{every_steps: 10, dir: '{disk}'}}\n")
        code, _, err = cli("run", spec_file)
    line = " ".join(err.split())
    assert code == 0 and "Traceback" not in err, err
    assert f"warning: checkpoint of step 10 not written to {disk}/ckpt-000000010.pt: Read-only file system" in line


def test_a_full_home_fails_the_job_cleanly_when_the_model_cannot_be_saved(tmp_path, cli, monkeypatch):
    """Kind 10 (disk full): ELASTRAIN_HOME on a tmpfs too small for the model. `elastrain run`
    fails with exit 1 and one line naming the model folder and the bytes needed; the run folder
    keeps its record (failed, with the message) and no half-written file (a torch traceback in
    `save_model` before)."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(WIDE_JOB)
    with tmpfs(tmp_path / "home", "size=64k") as home:
        monkeypatch.setenv("ELASTRAIN_HOME", str(home))
        code, _, err = cli("run", spec_file)
        [folder] = RunFolder.all(home)
        result = folder.read_result()
        assert leftovers(home) == [] and not folder.model_dir.exists()
    line = " ".join(err.split())
    assert code == 1 and "Traceback" not in err, err
    assert f"error: the model not written to {folder.model_dir}: No space left on device (it needs " in line
    assert result["status"] == "failed" and "the model not written" in result["message"]


def test_a_read_only_checkpoint_folder_under_ray_workers_warns_and_the_job_succeeds(tmp_path, elastrain_home,
                                                                                   ray_address):
    """Kind 10 (read-only disk), on an elastic group of Ray workers: the rank-0 worker's failed
    checkpoint writes reach the job as `checkpoint_failed` events and warnings (path, reason,
    bytes needed), and the job trains to its end and saves its model."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        spec = parse_spec(WIDE_JOB.replace("epochs: 2", "epochs: 1")
                          + f"checkpoint: {{every_steps: 10, dir: '{disk}'}}\n"
                          "resources: {workers: {min: 1, max: 2}, cpus_per_worker: 1, wait_timeout_s: 60}\n")
        progress = Warnings()
        result = run_job(spec, elastrain_home, progress=progress)
    assert result.status == "succeeded" and Path(result.model_path, "model.pt").is_file()
    failed = [e for e in RunFolder(Path(result.run_dir)).read_events() if e["kind"] == "checkpoint_failed"]
    assert [e["step"] for e in failed] == [10, 20]
    assert progress.messages[0].startswith(f"checkpoint of step 10 not written to {disk}/ckpt-000000010.pt: "
                                           "Read-only file system (it needs ")
