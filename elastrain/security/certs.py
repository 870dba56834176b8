"""Certificates for encrypted transport: a private CA, and certificates it signs for named hosts.

Every certificate issued here serves as TLS server and as TLS client certificate (extended key
usage serverAuth and clientAuth), so the same files serve `elastrain server --tls-cert/--tls-key`
and Ray's mutual TLS between nodes (RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT).
Keys are EC P-256 in unencrypted PEM (PKCS#8); certificates are PEM.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from elastrain.errors import UserError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650     # a CA outlives the certificates it signs: those are renewed, it is not
CERT_DAYS = 365
# Valid from a little before now: a peer whose clock runs behind still accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)
KEY_MODE = 0o600
CERT_MODE = 0o644

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_CA_EXISTS = ("sign with that CA (pass --ca-dir), or choose another --out; a new CA would not verify the "
              "certificates the old one signed")
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey   # what a CA signs with here


@dataclass(frozen=True)
class IssuedCert:
    """What `issue_cert` wrote: a certificate and its private key (PEM files), the certificate of
    the CA that signed it, and whether that CA is new (then its `ca.key` lies beside it)."""

    cert: Path
    key: Path
    ca_cert: Path
    created_ca: bool

    @property
    def written(self) -> list[Path]:
        """Every file the call wrote, in the order it wrote them."""
        ca = [self.ca_cert, self.ca_cert.with_name(CA_KEY)] if self.created_ca else []
        return [*ca, self.cert, self.key]


def issue_cert(out_dir: Path, hosts: Sequence[str], *, name: str = "server", days: int = CERT_DAYS,
               ca_dir: Path | None = None) -> IssuedCert:
    """Issue a certificate for `hosts` as `out_dir/NAME.crt` and `out_dir/NAME.key` (mode 0600;
    the folder is made if missing), signed by the CA in `ca_dir` (its `ca.crt` and `ca.key`), or
    without `ca_dir` by a new, self-signed CA written to `out_dir` as `ca.crt` and `ca.key` (mode
    0600; valid for `CA_DAYS` days, or `days` if longer).

    Each host goes into the subject alternative name: an IP address (v4 or v6) as IPAddress, any
    other as DNSName (`*.example.com` allowed). The certificate is valid from now for `days`
    days, as TLS server and as TLS client. Everything is checked before anything is written, and
    nothing is overwritten.

    Raises:
        UserError: no host, a host that is neither an IP address nor a DNS name, `name` not a
            plain file name, `days` below 1 or past the CA's expiry, the CA in `ca_dir` missing,
            unreadable, not a CA or its key not its own, a file to write existing already, or the
            folder not writable.
    """
    if not hosts:
        raise UserError("no host to issue a certificate for", where="--host",
                        fix="name each address clients use to reach it, e.g. --host 10.0.0.5 --host node1.example.com")
    alt_names = [_alt_name(host) for host in dict.fromkeys(hosts)]
    if not _NAME.fullmatch(name):
        raise UserError(f"'{name}' is not a plain file name", where="--name",
                        fix="use letters, digits, '.', '_' and '-' (at most 64), e.g. --name node1")
    _check_days(days)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    ca_cert_path, ca_key_path = (ca_dir or out_dir) / CA_CERT, (ca_dir or out_dir) / CA_KEY
    if ca_dir is None:
        _refuse_existing([ca_cert_path, ca_key_path], _CA_EXISTS)
    _refuse_existing([cert_path, key_path], "remove it to issue a new one, or pass another --name or --out")
    ca_cert, ca_key = _load_ca(ca_dir) if ca_dir else _new_ca(max(CA_DAYS, days))
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=days)
    if expires > ca_cert.not_valid_after_utc:
        raise UserError(f"the CA expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}, before the {days} days asked",
                        where="--days", fix="ask for fewer days, or create a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(_authority_key_id(ca_cert), critical=False)
            .sign(ca_key, hashes.SHA256()))
    if ca_dir is None:
        _write_pair(ca_cert, ca_key, ca_cert_path, ca_key_path)
    _write_pair(cert, key, cert_path, key_path)
    return IssuedCert(cert=cert_path, key=key_path, ca_cert=ca_cert_path, created_ca=ca_dir is None)


def _new_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: trust stores find a certificate's issuer by name.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"elastrain CA {secrets.token_hex(4)}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise UserError(f"'{host}' is neither an IP address nor a DNS name", where="--host",
                        fix="give an address such as 10.0.0.5 or a name such as node1.example.com")
    return x509.DNSName(host)


def _check_days(days: int) -> None:
    if days < 1:
        raise UserError(f"a certificate valid for {days} days", where="--days", fix="give 1 or more days")


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Names the CA's key as the CA names it, when it does (a CA made elsewhere may derive its
    identifier otherwise)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, SigningKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    fix = f"pass --ca-dir the folder that holds the {CA_CERT} and {CA_KEY} of `elastrain admin certs`"
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path, fix))
    except ValueError:
        raise UserError("not a PEM certificate", where=str(cert_path), fix=fix) from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, fix), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UserError("not an unencrypted PEM private key", where=str(key_path), fix=fix) from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise UserError("not a CA certificate (its basic constraints do not say CA)", where=str(cert_path), fix=fix)
    if not isinstance(key, SigningKey):
        raise UserError(f"a {type(key).__name__} cannot sign here (EC or RSA only)", where=str(key_path), fix=fix)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise UserError(f"this key does not belong to {cert_path}", where=str(key_path), fix=fix)
    return cert, key


def _public_der(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read it ({exc.strerror or type(exc).__name__})", where=str(path), fix=fix) from None


def _refuse_existing(paths: list[Path], fix: str) -> None:
    for path in paths:
        if path.exists():
            raise UserError("exists already (nothing is overwritten)", where=str(path), fix=fix)


def _write_pair(cert: x509.Certificate, key: SigningKey, cert_path: Path, key_path: Path) -> None:
    try:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), KEY_MODE)
        _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    except OSError as exc:
        raise UserError(f"cannot write it ({exc.strerror or type(exc).__name__})",
                        where=str(exc.filename or cert_path.parent),
                        fix="choose a folder you can write to with --out") from None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # The mode is given at creation: a key is never readable by others, not even for an instant.
    # O_EXCL: a file that appeared since the check is not overwritten either.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
        handle.write(data)
