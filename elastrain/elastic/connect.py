"""Joining Ray, the cluster at an address or an embedded instance, failing fast where no Ray answers.

`ray.init` on an address where no Ray answers retries inside Ray's C++ client for minutes, and the
main thread takes neither Ctrl-C nor SIGTERM meanwhile. So the address is checked first: a Ray
head's GCS is a gRPC server, which answers the HTTP/2 connection preface with a SETTINGS frame
(RFC 9113, section 3.4); a refused connection, silence or any other answer fails at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from elastrain import paths
from elastrain.errors import UserError, first_line

# A Ray head answers in milliseconds; this bounds a host that drops packets or a server that stays silent.
PROBE_TIMEOUT_S = 5.0
# Addresses that do not name a host: Ray finds (auto) or starts (local) the cluster itself.
SPECIAL_ADDRESSES = ("", "auto", "local")
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])   # length 0, type SETTINGS, no flags, stream 0
_FRAME_HEADER = 9
_SETTINGS = 4
# Ray starts worker processes at niceness 15, so that its own daemons stay responsive; but here
# the workers are the training itself, and at 15 any busy process of normal priority on the node
# starves them (measured: a 2-worker job on 2 busy cores did not start in 60 s; at 0 it ran).
# Applied to the instances elastrain starts; a cluster started with `ray start` takes the same
# setting from RAY_worker_niceness=0 in the environment of `ray start`.
EMBEDDED_SYSTEM_CONFIG = {"worker_niceness": 0}
AUTH_MODE = "RAY_AUTH_MODE"   # Ray's switch for token authentication (token | disabled)
_FIX = "start the cluster (`ray start --head`), correct RAY_ADDRESS, or unset it to run on an embedded Ray"


def connect_ray(address: str | None) -> bool:
    """Connect this process to Ray unless it already is: to the cluster at `address`
    (`host:port`, or `auto`: the one `ray start` started on this machine), or to a new embedded
    instance when it is None or `local`.

    Returns:
        Whether this call connected (the caller then calls `ray.shutdown()` when done).

    Raises:
        UserError: nothing that speaks Ray's protocol answers at `address`, or Ray refuses the
            connection (exit code 1).
    """
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    embedded = not address or address == "local"
    if not embedded:
        _use_token_if_available()
    import ray

    if address and address not in SPECIAL_ADDRESSES and not address.startswith("ray://"):
        check_ray_address(address)
    # ray.init replaces the SIGTERM handler with one that exits at once; the caller's (a run stops
    # after its step) is put back.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        # "local" always starts an instance: with no address Ray would join any cluster that
        # `ray start` left on this machine (and refuse the embedded settings).
        with _stderr_to(paths.ray_log()):
            ray.init(address="local" if embedded else address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False,
                     _system_config=EMBEDDED_SYSTEM_CONFIG if embedded else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:   # a head that refuses us (e.g. another auth token)
        raise UserError(f"Ray did not accept the connection ({first_line(exc)})",
                        where=f"RAY_ADDRESS={address}" if address else "the embedded Ray",
                        fix=_refused_fix(), exit_code=1) from None
    if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
        signal.signal(signal.SIGTERM, on_sigterm)
    log = paths.ray_log()
    if log is not None:
        _route_error_messages(log)
    return True


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """This process connected to Ray while in the block (to RAY_ADDRESS, or an embedded instance
    shut down at its end); as it was when it already was."""
    connected = connect_ray(os.environ.get("RAY_ADDRESS"))
    try:
        yield
    finally:
        if connected:
            import ray

            ray.shutdown()


def _route_error_messages(log: Path) -> None:
    """Send the error messages Ray's driver prints as they arrive (a worker process that died: 14
    lines about the out-of-memory killer, also when elastrain killed it on purpose) to `log`;
    elastrain's own events say what happened. Ray prints them through a private function of its
    worker module, looked up at each message; if a Ray release renames it, they reach the
    terminal as before."""
    import ray._private.worker as driver

    if not hasattr(driver, "print_to_stdstream"):
        return

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        with log.open("a") as handle:
            handle.write("".join(f"({data.get('pid', 'ray')}) {line}\n" for line in data.get("lines", [])))

    driver.print_to_stdstream = to_log


@contextlib.contextmanager
def _stderr_to(log: Path | None) -> Iterator[None]:
    """Send what this process writes to its standard error (file descriptor 2: Ray's C++ core
    writes there directly, e.g. its token-authentication notice) to the file `log` meanwhile;
    with None, leave it on the terminal."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with log.open("ab") as target:
            os.dup2(target.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _use_token_if_available() -> None:
    """Turn on Ray's token authentication for this process when RAY_AUTH_MODE is unset and a token
    is at hand. `ray start --head` turns it on for the cluster whenever ~/.ray/auth_token exists
    (any earlier embedded Ray wrote one), but a driver joining by address does not, and the head
    then refuses it. A token sent to a cluster without authentication is ignored, so this is safe.
    """
    if AUTH_MODE in os.environ or not _token_available():
        return
    os.environ[AUTH_MODE] = "token"
    if "ray" in sys.modules:
        # Ray's core read its settings from the environment when Ray was imported; re-read them,
        # as `ray start` itself does after turning the mode on (nothing is connected yet).
        from ray._raylet import Config

        Config.initialize("")


def _refused_fix() -> str:
    """What to do when a cluster refused this driver: about its auth token when that is the likely
    cause (this process sends none), else about the cluster."""
    if os.environ.get(AUTH_MODE, "").lower() != "token":
        return (f"a cluster started by `ray start` with a token requires one: set {AUTH_MODE}=token and give the "
                "cluster's token (`ray get-auth-token` on its head) in RAY_AUTH_TOKEN or ~/.ray/auth_token; "
                "or unset RAY_ADDRESS to run on an embedded Ray")
    return ("check the cluster with `ray status` on its head, and that this node's auth token (RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is the cluster's (`ray get-auth-token` on its head); "
            "or unset RAY_ADDRESS to run on an embedded Ray")


def _token_available() -> bool:
    """Whether Ray would find an auth token: in RAY_AUTH_TOKEN, at RAY_AUTH_TOKEN_PATH, or in its
    default file ~/.ray/auth_token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path or Path.home() / ".ray" / "auth_token").is_file()


def check_ray_address(address: str) -> None:
    """Return when a gRPC server (a Ray head's GCS) answers at `address` (`host:port`) within
    `PROBE_TIMEOUT_S`.

    Raises:
        UserError: the address is malformed (exit 2), or nothing, or something else, answers there (exit 1).
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"cannot read the Ray address '{address}'", where="RAY_ADDRESS",
                        fix="write host:port (e.g. 10.0.0.5:6379), ray://host:port, auto or local")
    tls = _ray_tls_context()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S) as plain:
            conn = tls.wrap_socket(plain, server_hostname=host.strip("[]")) if tls else plain
            conn.settimeout(PROBE_TIMEOUT_S)
            conn.sendall(_HTTP2_PREFACE + _EMPTY_SETTINGS)
            header = _read(conn, _FRAME_HEADER)
    except ssl.SSLError as exc:
        raise UserError(f"the Ray head at {host}:{port} refused this node's TLS certificate, or its own is not "
                        f"trusted ({exc.reason or exc})", where="RAY_TLS_SERVER_CERT / RAY_TLS_CA_CERT",
                        fix="use a certificate signed by the cluster's CA and that CA's certificate "
                            "(`elastrain admin certs --ca-dir ...`)", exit_code=1) from None
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise UserError(f"nothing answers at the Ray address {host}:{port} ({reason})", where="RAY_ADDRESS",
                        fix=_FIX, exit_code=1) from None
    if len(header) < _FRAME_HEADER or header[3] != _SETTINGS:
        raise UserError(f"the server at {host}:{port} is not a Ray cluster's head (it does not speak gRPC)",
                        where="RAY_ADDRESS", fix=_FIX, exit_code=1)


def _ray_tls_context() -> ssl.SSLContext | None:
    """The TLS client side Ray itself uses when RAY_USE_TLS is on (mutual TLS with this node's
    certificate, trusting the cluster's CA; gRPC over TLS negotiates HTTP/2 by ALPN), else None."""
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return None
    context = ssl.create_default_context(cafile=os.environ.get("RAY_TLS_CA_CERT"))
    if os.environ.get("RAY_TLS_SERVER_CERT"):
        context.load_cert_chain(os.environ["RAY_TLS_SERVER_CERT"], os.environ.get("RAY_TLS_SERVER_KEY"))
    context.set_alpn_protocols(["h2"])
    return context


def _read(conn: socket.socket, size: int) -> bytes:
    """Up to `size` bytes, fewer if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
