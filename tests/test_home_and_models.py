"""ELASTRAIN_HOME and the model folder as users meet them (issue 27, findings 11-13): a read-only
or full home on a real tmpfs mount, many real `elastrain` processes creating a new store at
once (SQLite and PostgreSQL), and damaged or foreign model folders given to `predict`, `serve`,
`optimize` and the registry."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text
from torch import nn

from elastrain.data import Preprocessor
from elastrain.elastic.collective import free_port
from elastrain.models import build_model
from elastrain.spec import MlpModelSpec
from elastrain.store.model_ref import local_registry
from elastrain.train.artifact import save_model
from tests.conftest import REPO, tmpfs

COLUMNS = ["a", "b", "c", "d"]


@pytest.fixture
def read_only(tmp_path):
    """An empty folder on a read-only file system."""
    with tmpfs(tmp_path / "read-only", "ro,size=1m") as path:
        yield path


@pytest.fixture
def full(tmp_path):
    """A folder on a file system with no space left."""
    with tmpfs(tmp_path / "full", "size=128k") as path:
        with contextlib.suppress(OSError), open(path / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield path


def one_line(err: str) -> str:
    """The one line of an error output, after checking it is one and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Aborted" not in err, err
    return lines[0]


# --- kind 11: a read-only or full ELASTRAIN_HOME -----------------------------------------------------------


def test_a_read_only_home_is_one_line_that_names_it(cli, read_only, monkeypatch, tmp_path):
    """Kind 11 (read-only ELASTRAIN_HOME): the registry, a run, a prediction by name and the server (before
    it announces itself) each say in one line that the folder is not writable and to set ELASTRAIN_HOME
    elsewhere; never an OSError traceback or "start the database server" (the SQLite file is local)."""
    monkeypatch.setenv("ELASTRAIN_HOME", str(read_only))
    monkeypatch.delenv("ELASTRAIN_DB_URL", raising=False)
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d\n1,2,3,4\n")
    for args in (["models"], ["run", REPO / "examples" / "logistic_breast_cancer.yaml"],
                 ["predict", "some-model", "-i", rows], ["server", "--port", free_port()]):
        code, _, err = cli(*args)
        line = one_line(err)
        assert code == 2, err
        assert f"ELASTRAIN_HOME {read_only} is not writable (Read-only file system" in line, line
        assert "set ELASTRAIN_HOME to a folder you can write" in line and "database server" not in line, line
    assert list(read_only.iterdir()) == []


def test_a_sqlite_url_in_a_read_only_folder_names_that_folder(cli, read_only, monkeypatch):
    """Kind 11 (read-only ELASTRAIN_HOME), the SQLite file of ELASTRAIN_DB_URL: the line says its folder is
    not writable, not "start the database server"."""
    monkeypatch.setenv("ELASTRAIN_DB_URL", f"sqlite:///{read_only / 'store.db'}")
    code, _, err = cli("models")
    line = one_line(err)
    assert code == 2
    assert f"the folder of the SQLite database {read_only / 'store.db'} is not writable" in line, line
    assert "database server" not in line


def test_a_full_home_is_one_line_that_names_it(cli, full, monkeypatch):
    """Kind 11 (ELASTRAIN_HOME on a full disk): the registry and a run each say in one line that the folder
    is full, never "start the database server" or an OSError traceback."""
    monkeypatch.setenv("ELASTRAIN_HOME", str(full))
    monkeypatch.delenv("ELASTRAIN_DB_URL", raising=False)
    for args in (["models"], ["run", REPO / "examples" / "logistic_breast_cancer.yaml"]):
        code, _, err = cli(*args)
        line = one_line(err)
        assert code == 2, err
        assert f"ELASTRAIN_HOME {full} is not writable" in line and "free space there" in line, line
        assert "database server" not in line


# --- kind 12: concurrent first use of a new store ----------------------------------------------------------


def first_uses(env: dict, processes: int) -> list[tuple[int, str]]:
    """Start `processes` real `elastrain models` at once with `env`; each one's exit code and stderr."""
    started = [subprocess.Popen([sys.executable, "-m", "elastrain", "models"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    return [(process.wait(timeout=300), process.communicate()[1]) for process in started]


def test_processes_that_first_use_a_new_home_at_once_all_succeed(tmp_path):
    """Kind 12 (concurrent first use of the store): six `elastrain models` started at once on a new
    ELASTRAIN_HOME all exit 0 (they failed with "table ... already exists"), round after round."""
    env = {k: v for k, v in os.environ.items() if k != "ELASTRAIN_DB_URL"}
    for round_ in range(3):
        home = tmp_path / f"home-{round_}"
        outcomes = first_uses({**env, "ELASTRAIN_HOME": str(home)}, 6)
        assert all(code == 0 for code, _ in outcomes), [err for code, err in outcomes if code]
        assert (home / "elastrain.db").is_file()


def empty(url: str) -> None:
    """Make the database at `url` new again: no tables (PostgreSQL), no file (SQLite)."""
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    else:
        database = Path(engine.url.database)
        for path in database.parent.glob(f"{database.name}*"):
            path.unlink()
    engine.dispose()


def test_processes_that_first_use_a_new_database_at_once_all_succeed(database_url, tmp_path):
    """Kind 12 (concurrent first use of the store), on the database ELASTRAIN_DB_URL names (a SQLite file;
    PostgreSQL, serialized by an advisory lock): six `elastrain models` at once all exit 0, round after round."""
    env = {**os.environ, "ELASTRAIN_DB_URL": database_url, "ELASTRAIN_HOME": str(tmp_path / "home")}
    for _ in range(2):
        empty(database_url)
        outcomes = first_uses(env, 6)
        assert all(code == 0 for code, _ in outcomes), [err for code, err in outcomes if code]
    with local_registry(database_url) as (store, owner):
        assert store.models(owner) == []


# --- kind 13: damaged or foreign model folders -------------------------------------------------------------


def write_model(folder: Path) -> Path:
    """A small MLP classifier's model folder (4 columns, 3 classes), as `elastrain run` saves one."""
    spec = MlpModelSpec(hidden=[8])
    model = build_model(spec, (4,), 3)
    preprocessor = Preprocessor(layout="table", input_shape=(4,), columns=COLUMNS, center=[0.0] * 4,
                                scale=[1.0] * 4, classes=["x", "y", "z"])
    return save_model(folder, model, spec, (4,), 3, "classification", "cross_entropy", preprocessor)


def edit_json(path: Path, change) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def foreign_onnx(folder: Path) -> None:
    edit_json(folder / "model.json", lambda meta: meta.update(format="onnx"))
    (folder / "model.pt").unlink()
    (folder / "model.onnx").write_bytes(b"\x08\x07" + b"not a protobuf graph" * 20)


def other_weights(folder: Path) -> None:
    torch.save(nn.Linear(2, 2).state_dict(), folder / "model.pt")


def whole_module(folder: Path) -> None:
    torch.save(nn.Linear(4, 3), folder / "model.pt")


# Each damage: what it does to a good model folder, and what the one line must say.
DAMAGES = {
    "model.pt truncated": (lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:300]),
                           "model.pt is truncated or not a PyTorch file — re-save or re-export it"),
    "model.pt empty": (lambda f: (f / "model.pt").write_bytes(b""), "model.pt is empty"),
    "model.pt foreign bytes": (lambda f: (f / "model.pt").write_bytes(b"GIF89a not weights" * 10),
                               "model.pt is truncated or not a PyTorch file"),
    "model.pt a pickled module": (whole_module, "model.pt holds Python objects, not only weights"),
    "model.pt of another model": (other_weights, "model.pt does not fit the model model.json describes "
                                                 "(weights missing"),
    "model.pt missing": (lambda f: (f / "model.pt").unlink(), "not a model directory (missing model.pt)"),
    "model.json bad JSON": (lambda f: (f / "model.json").write_text('{"format": "torch", "task": '),
                            "model.json is not valid JSON (Expecting value at line 1 column 29)"),
    "model.json unknown format": (lambda f: edit_json(f / "model.json", lambda m: m.update(format="keras")),
                                  "model.json names format 'keras', which elastrain does not read"),
    "model.json missing keys": (lambda f: edit_json(f / "model.json", lambda m: [m.pop("task"), m.pop("n_outputs")]),
                                "model.json lacks n_outputs, task"),
    "model.json wrong value": (lambda f: edit_json(f / "model.json", lambda m: m.update(input_shape="4")),
                               "model.json's input_shape is \"4\", not a list of positive whole numbers"),
    "model.json not a spec": (lambda f: edit_json(f / "model.json", lambda m: m["model"].update(hidden="many")),
                              "model.json's model spec is not one elastrain knows (hidden"),
    "model.json missing": (lambda f: (f / "model.json").unlink(), "not a model directory (missing model.json)"),
    "preprocess.json bad JSON": (lambda f: (f / "preprocess.json").write_text("{"),
                                 "preprocess.json is not valid JSON"),
    "preprocess.json missing keys": (lambda f: (f / "preprocess.json").write_text("{}"), "preprocess.json lacks"),
    "preprocess.json missing": (lambda f: (f / "preprocess.json").unlink(),
                                "not a model directory (missing preprocess.json)"),
    "model.onnx foreign": (foreign_onnx, "model.onnx is truncated or not an ONNX model"),
}


def damaged_folder(name: str, folder: Path) -> Path:
    """A good model folder written at `folder`, then damaged as DAMAGES[name] says."""
    write_model(folder)
    DAMAGES[name][0](folder)
    return folder


@pytest.fixture(params=list(DAMAGES))
def damaged(request, tmp_path):
    """A model folder with one damage of DAMAGES; (folder, what its one line must say)."""
    expected = DAMAGES[request.param][1]
    folder = damaged_folder(request.param, tmp_path / "model")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d\n1,2,3,4\n")
    return folder, expected, rows


def assert_names(err: str, folder: Path, expected: str) -> None:
    line = one_line(err)
    assert f"model folder {folder}: " in line and expected in line, line


def test_predict_and_optimize_say_what_is_wrong_with_a_damaged_model_folder(cli, damaged):
    """Kind 13 (damaged or foreign model folder): `predict` and `optimize` print one line naming the
    folder, the file and what is wrong, exit 2, and never print a traceback or a bare `Aborted.`."""
    folder, expected, rows = damaged
    for args in (["predict", folder, "-i", rows], ["optimize", folder, "--latency-s", "0.01"]):
        code, out, err = cli(*args)
        assert code == 2 and out == "", (args, out, err)
        assert_names(err, folder, expected)


def test_serve_refuses_a_damaged_model_folder_before_it_listens(cli, damaged, monkeypatch):
    """Kind 13 (damaged or foreign model folder): `elastrain serve` prints one line naming the folder,
    the file and what is wrong and exits 2 without listening, instead of uvicorn's start-up traceback.
    In this process (the real command; a uvicorn start fails the test instead of blocking it); the
    test below runs one damage as a real process."""
    import uvicorn

    folder, expected, _ = damaged
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve listened on a damaged model folder"))
    code, out, err = cli("serve", folder, "--port", free_port(), "--no-auth")
    assert code == 2 and out == "", (out, err)
    assert_names(err, folder, expected)


def test_serve_as_a_process_refuses_a_damaged_model_folder_before_it_listens(tmp_path):
    """Kind 13, as a user meets it: the `elastrain serve` process exits 2 with the one line."""
    name = "model.pt truncated"
    folder = damaged_folder(name, tmp_path / "model")
    done = subprocess.run([sys.executable, "-m", "elastrain", "serve", str(folder), "--port", str(free_port()),
                           "--no-auth"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert_names(done.stderr, folder, DAMAGES[name][1])


def test_a_registered_damaged_model_is_listed_and_named_in_one_line(cli, tmp_path):
    """Kind 13 (damaged or foreign model folder), through the registry: `elastrain models` still lists a
    registered version whose folder was damaged later, and `predict NAME@ALIAS` says what is wrong with
    its folder in one line."""
    folder = write_model(tmp_path / "model")
    with local_registry() as (store, owner):
        store.register_model(owner, "iris", str(folder), {"val_accuracy": 0.9}, "spec", "data")
        store.set_alias(owner, "iris", "production", 1)
    (folder / "model.pt").write_bytes(b"")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d\n1,2,3,4\n")
    code, out, err = cli("models")
    assert code == 0 and str(folder) in out and err == "", err
    code, out, err = cli("predict", "iris@production", "-i", rows)
    assert code == 2 and out == ""
    assert_names(err, folder, "model.pt is empty")


def test_an_intact_model_folder_still_loads_and_predicts(cli, tmp_path):
    """Kind 13's validating loader lets a good model folder through: `predict` answers one label per row."""
    folder = write_model(tmp_path / "model")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d\n1,2,3,4\n0,0,0,0\n")
    code, out, err = cli("predict", folder, "-i", rows)
    assert code == 0, err
    assert all(label in ("x", "y", "z") for label in out.split())
