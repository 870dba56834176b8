"""The README's cluster recipe as a user types it: `ray start --head`, then
`RAY_ADDRESS=127.0.0.1:PORT elastrain server`, a job submitted and finished (issue 27, kind 19:
a cluster that `ray start` started with token authentication refused the server's driver).

The head runs in a temporary folder and on free ports, in its own session, and is stopped by
killing that session's processes: never `ray stop`, which would stop every Ray on this machine.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from elastrain.elastic.collective import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SPEC = {"name": "on-the-cluster", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
        "train": {"epochs": 2}, "resources": {"workers": {"min": 1, "max": 1}, "cpus_per_worker": 1}}


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose home folder is `home`, who has set nothing about Ray's
    authentication (`ray start` and the driver find the token in ~/.ray/auth_token)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RAY_AUTH", "RAY_ADDRESS", "ELASTRAIN_DB_URL"))}
    return {**env, "HOME": str(home), **extra}


def distinct_free_ports(count: int) -> list[int]:
    """`count` different ports that are free now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def stop_session(leader: int) -> None:
    """Kill every process of the session `leader` started (the head's daemons and their workers) and
    wait for them to end. SIGKILL at once: the head's folder is a temporary one, and some of Ray's
    daemons take SIGTERM's grace period whole."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == leader:
                members.append(process)
        except OSError:   # it ended meanwhile
            pass
    for process in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(members, timeout=30)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`RAY_worker_niceness=0 ray start --head` (the README's recipe) on a free port, in a temporary
    folder, for a user whose ~/.ray/auth_token exists (as any earlier embedded Ray, e.g. `make demo`,
    leaves it): Ray then turns token authentication on. Yields (the user's home, the head's port)."""
    home = tmp_path_factory.mktemp("user")
    env = user_env(home)
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    assert (home / ".ray" / "auth_token").is_file()
    port, client_port, dashboard_port, agent_port = distinct_free_ports(4)
    # Ray's sockets live in its temp folder and a socket's path may not exceed 107 bytes: pytest's
    # numbered folders (pytest-of-root/pytest-NN/popen-gwN/...) grow past it after some runs.
    temp_dir = Path(tempfile.mkdtemp(prefix="erc-", dir="/tmp"))
    # A session of its own: the head's daemons stay in it, and are stopped by it.
    start = subprocess.Popen(
        [BIN / "ray", "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         f"--ray-client-server-port={client_port}", f"--dashboard-port={dashboard_port}",
         f"--dashboard-agent-listen-port={agent_port}"],
        env={**env, "RAY_worker_niceness": "0"}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = start.communicate(timeout=180)
        assert start.returncode == 0, output
        assert "Token authentication is enabled" in output, output
        yield home, port
    finally:
        stop_session(start.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_server(home: Path, ray_port: int, elastrain_home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`RAY_ADDRESS=127.0.0.1:PORT elastrain server --port N`; returned once it answers, with its URL."""
    port = free_port()
    env = user_env(home, RAY_ADDRESS=f"127.0.0.1:{ray_port}", ELASTRAIN_HOME=str(elastrain_home))
    with log.open("wb") as output:
        server = subprocess.Popen([BIN / "elastrain", "server", "--port", str(port)], env=env, cwd=home,
                                  stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/v1"

    def answers() -> bool:
        assert server.poll() is None, f"the server exited ({server.returncode}): {log.read_text()}"
        try:
            return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=120, poll=0.2)
    except BaseException:
        server.kill()
        raise
    return server, url


def test_the_readme_cluster_recipe_runs_a_job_as_typed(ray_head, tmp_path, elastrain_home, cli):
    """Kind 19: the server joins a token-authenticated cluster that `ray start --head` started,
    with RAY_ADDRESS alone, and a job submitted to it runs on that cluster to the end."""
    home, ray_port = ray_head
    _, out, _ = cli("admin", "create-user", "ada")
    token = out.strip().splitlines()[-1]
    server, url = start_server(home, ray_port, elastrain_home, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            submitted = api.post("/jobs", json=SPEC)
            assert submitted.status_code == 201, submitted.text
            job_id = submitted.json()["job_id"]
            wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] in ("succeeded", "failed"), timeout=300)
            job = api.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_driver_without_the_clusters_token_is_told_how_to_give_it(ray_head, tmp_path):
    """Kind 19: a node without the token of a cluster that requires one exits with one line naming
    RAY_AUTH_MODE=token and where the token goes, no traceback."""
    _, ray_port = ray_head
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    env = user_env(stranger, RAY_ADDRESS=f"127.0.0.1:{ray_port}", ELASTRAIN_HOME=str(tmp_path / "home"))
    done = subprocess.run([BIN / "elastrain", "server", "--port", str(free_port())], env=env, cwd=stranger,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "RAY_AUTH_MODE=token" in errors[0] and "auth_token" in errors[0], errors[0]
