"""`pip install` of the built wheel into a fresh virtual environment, as a user without this
repository's requirements.txt gets it (issue 27, kind 18: undeclared dependencies, a 42-line
traceback for a missing optional one, the CUDA torch pulled in).

The venv is clean (no system site-packages); torch's CPU build goes in first, as the README says,
and every install is constrained by requirements.txt's pins, so nothing but the pinned versions is
fetched (pip's cache makes a rerun fast). Every command runs from a folder outside the repository.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from elastrain.elastic import run_job
from elastrain.elastic.collective import free_port
from elastrain.spec import validate_spec
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.slow

PIP_TIMEOUT_S = 1200   # a cold pip cache on a busy 2-core machine
EXTRA_COMMANDS = {   # the extra each command needs, and a call of it that needs the extra
    "serve": ["serve", "{model}", "--no-auth", "--port", "{port}"],
    "optimize": ["optimize", "{model}"],
    "tune": ["tune", "{spec}", "--set", "tune.n_trials=1"],
    "s3": ["predict", "s3://bucket/models/tiny", "--input", "{spec}"],   # fsspec: "Install s3fs to access S3"
}


def run(command: list, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`command`, its output captured as text."""
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def pip(venv: Path, *args: str | Path, cwd: Path, env: dict[str, str]) -> None:
    """`pip install ARGS` in `venv`; fails the test with pip's output if pip does."""
    done = run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", *args], cwd, env, PIP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder outside the repository."""
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def user_env(workspace) -> dict[str, str]:
    """The environment of a user with no virtual environment active and an empty ELASTRAIN_HOME."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "ELASTRAIN_HOME": str(workspace / "home")}


@pytest.fixture(scope="module")
def wheel(workspace) -> Path:
    """elastrain's wheel, built from a copy of the sources (no build/ folder left in the repository)."""
    source = workspace / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "elastrain", source / "elastrain", ignore=shutil.ignore_patterns("__pycache__"))
    # The build backend setuptools is the test environment's own (no download for an isolated build).
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", source,
                "-w", workspace / "dist"], workspace, os.environ)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (workspace / "dist").glob("elastrain-*.whl")
    return built


@pytest.fixture(scope="module")
def constraints(workspace) -> Path:
    """requirements.txt as a constraints file (pip takes no extras there: `ray[serve]` -> `ray`)."""
    path = workspace / "constraints.txt"
    path.write_text(re.sub(r"^([A-Za-z0-9_.-]+)\[[^\]]*\]", r"\1", (REPO / "requirements.txt").read_text(),
                           flags=re.MULTILINE))
    return path


@pytest.fixture(scope="module")
def venv(workspace, wheel, constraints, user_env) -> Path:
    """A fresh venv with torch's CPU build, then the wheel without extras."""
    path = workspace / "venv"
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    started = time.monotonic()
    # The README's way: the CPU build first (users take it from download.pytorch.org/whl/cpu; here
    # pip finds it on local disk). Asking for +cpu means it can never be the CUDA build.
    pip(path, "torch==2.13.0+cpu", "-c", constraints, cwd=workspace, env=user_env)
    pip(path, wheel, "-c", constraints, cwd=workspace, env=user_env)
    print(f"torch and the wheel installed in {time.monotonic() - started:.0f} s")
    return path


@pytest.fixture(scope="module")
def model(workspace) -> Path:
    """A small trained model's folder."""
    spec = validate_spec({"name": "tiny", "data": {"source": "builtin:iris"}, "model": {"kind": "mlp", "hidden": [8]},
                          "train": {"epochs": 2}})
    result = run_job(spec, workspace / "trained")
    assert result.status == "succeeded"
    return Path(result.model_path)


def installed_packages(venv: Path) -> dict[str, str]:
    """Name (lower case) -> version of what is installed in `venv`."""
    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True).stdout
    return dict(line.lower().split("==", 1) for line in listed.splitlines() if "==" in line)


def test_a_missing_optional_dependency_is_one_line_naming_its_extra(venv, model, workspace, user_env):
    """Kind 18: with the wheel alone, `serve`, `optimize` and `tune` (and `predict` of an s3://
    model) each exit with one line naming the extra to install, no traceback, before they start;
    the CPU torch stays, and nothing from CUDA came in."""
    packages = installed_packages(venv)
    assert packages["torch"] == "2.13.0+cpu"
    assert not [name for name in packages if name.startswith("nvidia")], packages
    spec = shutil.copy(REPO / "examples" / "tune_mlp_digits.yaml", workspace / "study.yaml")
    for extra, command in EXTRA_COMMANDS.items():
        args = [part.format(model=model, spec=spec, port=free_port()) for part in command]
        done = run([venv / "bin" / "elastrain", *args], workspace, user_env)
        assert done.returncode == 1, (extra, done.stdout, done.stderr)
        said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        # One line, before the command printed or started anything (`serve` announced its URL).
        assert len(said) == 1 and said[0].startswith("error: "), said
        assert f"pip install 'elastrain[{extra}]'" in said[0], said


def test_the_wheel_with_its_extras_serves_optimizes_and_tunes(venv, wheel, constraints, model, workspace, user_env):
    """Kind 18: `pip install 'elastrain[serve,tune,optimize]'` into the venv gives a working
    `elastrain serve`, `tune` and `optimize`: a model optimized to ONNX and served, answering."""
    pip(venv, f"{wheel}[serve,tune,optimize]", "-c", constraints, cwd=workspace, env=user_env)
    packages = installed_packages(venv)
    assert packages["torch"] == "2.13.0+cpu"
    assert not [name for name in packages if name.startswith("nvidia")], packages
    elastrain = venv / "bin" / "elastrain"
    located = run([venv / "bin" / "python", "-c", "import elastrain; print(elastrain.__file__)"], workspace, user_env)
    assert Path(located.stdout.strip()).is_relative_to(venv), located.stdout   # the installed copy, not the checkout
    for command in ("serve", "tune", "optimize"):
        done = run([elastrain, command, "--help"], workspace, user_env)
        assert done.returncode == 0, done.stderr
    for modules in ("optuna, cmaes", "onnx, onnxscript, onnxruntime, torchao, torch_pruning",
                    "prometheus_client, onnxruntime, ray.serve"):
        done = run([venv / "bin" / "python", "-c", f"import {modules}"], workspace, user_env)
        assert done.returncode == 0, done.stderr

    # --export onnx: an ONNX model is shipped even where float32 measures fastest on a busy machine
    # (then optimize ships nothing, and there would be nothing to serve).
    optimized = run([elastrain, "optimize", model, "--export", "onnx", "--json"], workspace, user_env, timeout=600)
    assert optimized.returncode == 0, optimized.stderr
    shipped = json.loads(optimized.stdout.strip().splitlines()[-1])["model_path"]
    port = free_port()
    server = subprocess.Popen([elastrain, "serve", shipped, "--no-auth", "--port", str(port)], cwd=workspace,
                              env=user_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            assert server.poll() is None, server.stderr.read()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=120, poll=0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": [[5.1, 3.5, 1.4, 0.2]]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
