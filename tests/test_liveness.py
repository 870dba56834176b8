"""A worker is gone, hung or only slow by facts (issue 27's fault kind: a busy worker taken for a
lost host): the pure verdict, and the facts a TCP handshake gives about real processes."""

import signal
import socket
import subprocess
import sys

import pytest

from elastrain.elastic.liveness import Endpoint, Facts, Liveness, connect, judge

HANG_S = 30.0


def facts(**changes) -> Facts:
    base = {"answered": False, "probe_failed": False, "actor_dead": False, "node_dead": False,
            "endpoint": Endpoint.ACCEPTS, "silent_s": 0.0}
    return Facts(**(base | changes))


@pytest.mark.parametrize(("changes", "verdict"), [
    ({"answered": True}, Liveness.ALIVE),
    # silent, but its process accepts connections: slow (a starved CPU), waited for ...
    ({"silent_s": 5.0}, Liveness.SLOW),
    ({"silent_s": HANG_S - 0.1}, Liveness.SLOW),
    # ... until the job's hang timeout: wedged or stopped
    ({"silent_s": HANG_S}, Liveness.HUNG),
    # facts that it is gone, at once
    ({"probe_failed": True}, Liveness.GONE),
    ({"actor_dead": True}, Liveness.GONE),
    ({"node_dead": True}, Liveness.GONE),
    ({"endpoint": Endpoint.REFUSED}, Liveness.GONE),
    ({"endpoint": Endpoint.UNREACHABLE}, Liveness.GONE),
    # Ray has not said where it is: no fact either way
    ({"endpoint": Endpoint.UNKNOWN, "silent_s": 1.0}, Liveness.SLOW),
])
def test_the_verdict_follows_facts_and_the_hang_timeout_never_a_short_deadline(changes, verdict):
    assert judge(facts(**changes), HANG_S) is verdict


def test_a_stopped_process_still_accepts_a_handshake_and_a_gone_one_refuses():
    """The fact the verdict rests on: the kernel completes a TCP handshake for a live process
    however starved (here: stopped) it is, and refuses one once the process is gone."""
    server = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)\n"
         "print(s.getsockname()[1], flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        address = ("127.0.0.1", int(server.stdout.readline()))
        assert connect(address) is Endpoint.ACCEPTS
        server.send_signal(signal.SIGSTOP)
        assert connect(address) is Endpoint.ACCEPTS
    finally:
        server.kill()
        server.wait()
    assert connect(address) is Endpoint.REFUSED


def test_an_endpoint_that_does_not_complete_the_handshake_is_unreachable():
    """A lost host answers no SYN. Locally the same happens at a listener whose accept queue is
    full: the kernel drops the SYN (an address outside this machine is no use here: the sandbox's
    gateway completes every outbound handshake)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler = socket.create_connection(address, timeout=1)   # the queue holds one: now full
        try:
            assert connect(address, timeout_s=0.5) is Endpoint.UNREACHABLE
        finally:
            filler.close()
    assert connect(None) is Endpoint.UNKNOWN


def test_a_closed_port_refuses():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert connect(("127.0.0.1", port)) is Endpoint.REFUSED
