"""The HTTP client of `elastrain server`, used by the SDK, studies and the CLI: one small client whose
errors are one line for the user."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from elastrain.errors import UserError
from elastrain.security.transport import CA_CERT_ENV, client_verify

if TYPE_CHECKING:
    from elastrain.spec import JobSpec

DEFAULT_SERVER = "http://127.0.0.1:8080"
# OpenSSL's codes for a certificate that is valid but names another host or address.
_NAME_MISMATCH = (62, 64)   # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class Remote:
    """The REST API at `server` (a base URL such as https://10.0.0.5:8080), as user `token`; an
    https server's certificate is verified against the CA in `ca_cert` when given, else against
    the system's trusted CAs.

    Raises:
        UserError: no token, or `ca_cert` unreadable (see `client_verify`).
    """

    def __init__(self, server: str, token: str | None, ca_cert: str | Path | None = None) -> None:
        if not token:
            raise UserError("no API token", where="--token",
                            fix="pass --token or set ELASTRAIN_TOKEN (`elastrain admin create-user` prints one)")
        self.server = server.rstrip("/")
        self.client = httpx.Client(base_url=f"{self.server}/api/v1", timeout=30, verify=client_verify(ca_cert),
                                   headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request.

        Raises:
            UserError: the server cannot be reached, rejects the token, or refuses the request.
        """
        return self.send(method, path, **kwargs).json()

    def send(self, method: str, path: str, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """The answer of one request: a success, or an error whose status is in `accept`.

        Raises:
            UserError: the server cannot be reached, rejects the token, or refuses the request
                with a status not in `accept`.
        """
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            untrusted = _verification_error(exc)
            if untrusted is not None:
                raise _untrusted(self.server, untrusted) from None
            raise UserError(f"cannot reach the elastrain server ({type(exc).__name__})", where=self.server,
                            fix="start it with `elastrain server`, or pass --server / set ELASTRAIN_SERVER",
                            exit_code=1) from None
        if response.status_code < 400 or response.status_code in accept:
            return response
        detail = detail_of(response)
        if response.status_code == 401:
            raise UserError("the server rejected the token", where=self.server,
                            fix="pass a valid --token or set ELASTRAIN_TOKEN", exit_code=1)
        if response.status_code == 404:
            raise UserError(f"{detail} (or it is not yours)", where=self.server,
                            fix="list yours with `elastrain jobs`", exit_code=1)
        if response.status_code == 422:
            raise UserError(detail, where=self.server, fix="correct the request", exit_code=2)
        raise UserError(detail, where=f"{self.server} (HTTP {response.status_code})", exit_code=1)


def read_token(given: str | None) -> str | None:
    """The API token: `given` itself, or the first line of the file `@PATH` names (a token typed on
    the command line shows in every process listing of the machine; one in a file does not).

    Raises:
        UserError: the file cannot be read or is empty (exit code 2).
    """
    if not given or not given.startswith("@"):
        return given
    path = Path(given[1:]).expanduser()
    try:
        lines = path.read_text().split()
    except OSError as exc:
        raise UserError(f"cannot read the token file {path} ({exc.strerror or type(exc).__name__})", where="--token",
                        fix="write the token `elastrain admin create-user` printed into that file") from None
    if not lines:
        raise UserError(f"the token file {path} is empty", where="--token",
                        fix="write the token `elastrain admin create-user` printed into that file")
    return lines[0]


def _verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The failed certificate check behind an httpx error (it wraps httpcore's, which wraps ssl's)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    return cause


def _untrusted(server: str, error: ssl.SSLCertVerificationError) -> UserError:
    if error.verify_code in _NAME_MISMATCH:
        return UserError(f"the server's TLS certificate is not for this address ({error.verify_message})",
                         where=server, fix="reach it by a name or address its certificate lists, or issue it one "
                         "that lists this one: `elastrain admin certs --host ...`", exit_code=1)
    return UserError(f"the server's TLS certificate is not trusted ({error.verify_message})", where=server,
                     fix=f"pass --ca-cert FILE or set {CA_CERT_ENV} to the CA certificate that signed it "
                     "(the ca.crt of `elastrain admin certs`)", exit_code=1)


def detail_of(response: httpx.Response) -> str:
    """The one line an error answer's body says."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(detail, dict):
        return detail.get("message", str(detail))
    if isinstance(detail, list) and detail:   # FastAPI's own validation errors
        first = detail[0]
        return f"{'.'.join(str(p) for p in first.get('loc', [])[1:])}: {first.get('msg')}"
    return str(detail)


def submit_job(remote: Remote, spec: JobSpec, spec_dir: Path, uploaded: dict[str, str] | None = None) -> dict:
    """Queue `spec` on the server, with what it needs from this machine (`elastrain.bundle`: a
    `python:` model beside the spec in `spec_dir`, a local data file or folder); the server's answer.
    `uploaded` (a bundle's SHA-256 -> its id on the server) is filled in and spares sending the
    same bundle twice (a study's trials).

    Raises:
        UserError: the bundle is too big, or the server refuses the job.
    """
    from elastrain.bundle import pack

    archive, spec = pack(spec, spec_dir)
    params = None
    if archive is not None:
        uploaded = {} if uploaded is None else uploaded
        digest = hashlib.sha256(archive).hexdigest()
        if digest not in uploaded:
            uploaded[digest] = remote.call("POST", "/bundles", content=archive,
                                           headers={"Content-Type": "application/zip"})["bundle"]
        params = {"bundle": uploaded[digest]}
    return remote.call("POST", "/jobs", json=spec.model_dump(mode="json"), params=params)

