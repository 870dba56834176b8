"""TLS rules of the server and its clients: where the server may listen without TLS, that its
certificate and key load, and which CA a client trusts."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from elastrain.errors import UserError

CA_CERT_ENV = "ELASTRAIN_CA_CERT"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only: `localhost`, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, tls: bool, insecure: bool) -> None:
    """Allow the server to listen on `host`: a loopback address always; any other only with TLS,
    or with `insecure` (plain HTTP on purpose, e.g. behind a proxy that terminates TLS).

    Raises:
        UserError: a non-loopback `host` without TLS and without `insecure` (exit code 2): tokens
            and specs would cross the network in clear text.
    """
    if tls or insecure or is_loopback(host):
        return
    raise UserError(f"refusing to serve plain HTTP on {host}: API tokens would cross the network unencrypted",
                    where="--host", fix="pass --tls-cert and --tls-key (`elastrain admin certs` makes them), "
                    "or --insecure to serve plain HTTP anyway")


def check_server_tls(cert: Path | None, key: Path | None) -> None:
    """Check, before the server starts, that `cert` and `key` are both given or both absent, can
    be read, and load together as a PEM certificate and its private key.

    Raises:
        UserError: one of the two missing, a file unreadable, or the pair unusable (exit code 2).
    """
    if cert is None and key is None:
        return
    if cert is None or key is None:
        missing = "--tls-cert" if cert is None else "--tls-key"
        raise UserError("TLS needs both a certificate and its key", where=missing,
                        fix="pass --tls-cert FILE and --tls-key FILE together")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {path} ({exc.strerror or type(exc).__name__})", where=option,
                            fix="give a readable PEM file (`elastrain admin certs` writes them)") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise UserError(f"{cert} and {key} are not a PEM certificate and its private key ({exc.reason or exc})",
                        where="--tls-cert/--tls-key",
                        fix="give the NAME.crt and NAME.key that `elastrain admin certs` wrote together") from None


def client_verify(ca_cert: str | Path | None) -> ssl.SSLContext | bool:
    """What a client passes to httpx as `verify=`: a context that trusts only the CA certificate in
    `ca_cert` when one is given (a private CA, as `elastrain admin certs` makes), else True (the
    system's trusted CAs).

    Raises:
        UserError: `ca_cert` cannot be read or holds no PEM certificate (exit code 2).
    """
    if not ca_cert:
        return True
    fix = f"pass --ca-cert (or set {CA_CERT_ENV}) to the CA certificate that signed the server's, e.g. its ca.crt"
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except ssl.SSLError as exc:   # an OSError too: caught first
        raise UserError(f"{ca_cert} holds no PEM certificate ({exc.reason or exc})", where="--ca-cert",
                        fix=fix) from None
    except OSError as exc:
        raise UserError(f"cannot read {ca_cert} ({exc.strerror or type(exc).__name__})", where="--ca-cert",
                        fix=fix) from None
