"""A Ray cluster of several hosts on one machine: each host a Linux network namespace with its own
address on a private bridge, a Ray head in the first and Ray worker nodes in the others.

Killing every process of a namespace is what losing a host looks like to the rest of the cluster
(its sockets close, its raylet stops answering); starting its Ray node again is the host coming
back. Needs root (`ip netns add`); `available()` says whether this machine allows it. Traffic stays
on the bridge (10.77.x.0/24, no route out) and each namespace's loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from elastrain.security.certs import IssuedCert, issue_cert

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_PORT = 6379
# Ray's own processes and the training workers inherit this environment. Token auth is Ray's
# default for clusters `ray.init` starts; these tests join by address and TLS is tested apart.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0",
           # A lost raylet is declared dead after 3 missed checks of 1 s (Ray's default: 5 of 3 s).
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def available() -> str | None:
    """None when this machine can build namespace clusters, else why it cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"etr-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespace host: its name, address and Ray temp folder."""

    name: str
    address: str
    temp_dir: Path
    cpus: int
    env: dict = field(default_factory=dict)   # this host's own settings (its TLS certificate)

    def run(self, command: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run `command` inside this host's namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.name, *command],
                              env={**os.environ, **RAY_ENV, **self.env, **(env or {})}, capture_output=True, text=True,
                              **kwargs)

    def popen(self, command: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start `command` inside this host's namespace."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *command],
                                env={**os.environ, **RAY_ENV, **self.env, **(env or {})}, **kwargs)

    def pids(self) -> list[int]:
        """Every process in this host's namespace."""
        listed = _ip("netns", "pids", self.name, check=False).stdout.split()
        return [int(pid) for pid in listed]

    def kill(self) -> int:
        """SIGKILL every process of this host (the host is lost); returns how many there were."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


@dataclass
class Cluster:
    """Hosts on one bridge; `hosts[0]` runs the Ray head."""

    hosts: list[Host]
    bridge: str
    prefix: str
    env: dict = field(default_factory=dict)

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def ray_address(self) -> str:
        return f"{self.head.address}:{HEAD_PORT}"

    def start_node(self, host: Host, timeout_s: float = 120, env: dict | None = None) -> None:
        """Start `host`'s Ray node (the head for hosts[0]) with `env` over its settings; returns
        once `ray start` has (the node has registered with the head).

        Raises:
            RuntimeError: `ray start` failed (its output is in the message).
            subprocess.TimeoutExpired: it did not end within `timeout_s`.
        """
        common = ["--node-ip-address", host.address, "--num-cpus", str(host.cpus), "--temp-dir", str(host.temp_dir),
                  "--disable-usage-stats"]
        if host is self.head:
            command = [RAY, "start", "--head", "--port", str(HEAD_PORT), "--include-dashboard=false", *common]
        else:
            command = [RAY, "start", "--address", self.ray_address, *common]
        done = host.run(command, env={**self.env, **(env or {})}, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"ray start on {host.name} failed:\n{done.stdout}\n{done.stderr}")

    def alive_nodes(self) -> set[str]:
        """The addresses of the Ray nodes the head counts alive."""
        script = (f"import ray, json; ray.init(address='{self.ray_address}', logging_level='ERROR', "
                  "log_to_driver=False); "
                  "print('ALIVE ' + json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))")
        done = self.head.run([sys.executable, "-c", script], env=self.env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"cannot list the cluster's nodes:\n{done.stderr[-2000:]}")
        import json

        # Ray prints notices of its own on standard output too (a node's lagging heartbeats, say).
        answer = next(line for line in done.stdout.splitlines() if line.startswith("ALIVE "))
        return set(json.loads(answer.removeprefix("ALIVE ")))

    def wait_nodes(self, addresses: set[str], timeout_s: float = 60) -> None:
        """Wait until exactly `addresses` are the alive Ray nodes."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.alive_nodes()
            if alive == addresses:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"alive nodes {sorted(alive)}, wanted {sorted(addresses)}")
            time.sleep(0.5)

    def teardown(self) -> None:
        """Kill every process of every host, delete the namespaces, the bridge and the temp folders."""
        for host in self.hosts:
            host.kill()
        for host in self.hosts:
            _ip("netns", "del", host.name, check=False)
            _ip("link", "del", f"{host.name}-v", check=False)
        shutil.rmtree(f"/tmp/{self.prefix}", ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)


def tls_env(cert: IssuedCert) -> dict:
    """Ray's settings for mutual TLS between its processes with this certificate and its CA."""
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": str(cert.cert), "RAY_TLS_SERVER_KEY": str(cert.key),
            "RAY_TLS_CA_CERT": str(cert.ca_cert)}


def build(cpus: list[int], env: dict | None = None, tls: bool = False) -> Cluster:
    """Namespaces for len(cpus) hosts on a new bridge, their Ray nodes started (hosts[0] the head
    with cpus[0] CPUs, the others workers with theirs). With `tls`, Ray's traffic between them is
    mutual TLS: a CA and a certificate per host for its address (`elastrain.security.certs`, as
    `elastrain admin certs` makes them), under the cluster's temp folder `certs/`. Torn down by
    `Cluster.teardown` even when this raises part way."""
    tag = uuid.uuid4().hex[:4]
    subnet = 10 + int(tag, 16) % 200   # 10.77.<subnet>.0/24, one per cluster, so runs do not collide
    cluster = Cluster([], bridge=f"etr{tag}-br", prefix=f"etr{tag}", env=env or {})
    try:
        _ip("link", "add", cluster.bridge, "type", "bridge")
        _ip("addr", "add", f"10.77.{subnet}.1/24", "dev", cluster.bridge)
        _ip("link", "set", cluster.bridge, "up")
        for index, count in enumerate(cpus):
            # Ray's sockets live in its temp folder, and a socket's path may not exceed 107 bytes.
            host = Host(f"etr{tag}-h{index}", f"10.77.{subnet}.{11 + index}", Path(f"/tmp/etr{tag}/h{index}"), count)
            cluster.hosts.append(host)
            _ip("netns", "add", host.name)
            _ip("link", "add", f"{host.name}-v", "type", "veth", "peer", "name", "eth0", "netns", host.name)
            _ip("link", "set", f"{host.name}-v", "master", cluster.bridge)
            _ip("link", "set", f"{host.name}-v", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
        if tls:
            certs = Path(f"/tmp/{cluster.prefix}/certs")
            for host in cluster.hosts:   # the first certificate makes the CA, which signs the others
                issued = issue_cert(certs, [host.address, "127.0.0.1"], name=host.name,
                                    ca_dir=certs if (certs / "ca.crt").exists() else None)
                host.env = tls_env(issued)
        for host in cluster.hosts:
            cluster.start_node(host)
        cluster.wait_nodes({host.address for host in cluster.hosts})
    except BaseException:
        cluster.teardown()
        raise
    return cluster
