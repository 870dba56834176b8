"""Encrypted transport: certificates of `elastrain admin certs`, a real `elastrain server` over
HTTPS, and clients that trust it only through --ca-cert / ELASTRAIN_CA_CERT."""

import ipaddress
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from elastrain.client import Remote
from elastrain.elastic.collective import free_port
from elastrain.errors import UserError
from elastrain.security.certs import issue_cert
from elastrain.security.transport import check_listen, check_server_tls
from tests.conftest import REPO, start_server


def test_a_certificate_names_its_hosts_serves_both_ends_and_its_keys_are_private(cli, tmp_path):
    certs = tmp_path / "certs"
    code, out, _ = cli("admin", "certs", "--out", certs, "--host", "127.0.0.1", "--host", "node1.example.com",
                       "--host", "::1", "--json")
    made = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and made["written"] == [str(certs / f) for f in ("ca.crt", "ca.key", "server.crt", "server.key")]
    cert = x509.load_pem_x509_certificate((certs / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert names.get_values_for_type(x509.DNSName) == ["node1.example.com"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert {(certs / key).stat().st_mode & 0o777 for key in ("ca.key", "server.key")} == {0o600}
    # A second node's certificate from the same CA, into another folder; nothing is overwritten.
    node2 = issue_cert(tmp_path / "node2", ["10.0.0.2"], name="node2", ca_dir=certs)
    assert node2.written == [tmp_path / "node2" / "node2.crt", tmp_path / "node2" / "node2.key"]
    assert node2.ca_cert == certs / "ca.crt" and (node2.key.stat().st_mode & 0o777) == 0o600
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    x509.load_pem_x509_certificate(node2.cert.read_bytes()).verify_directly_issued_by(ca)
    code, _, err = cli("admin", "certs", "--out", certs, "--host", "127.0.0.1")
    assert code == 2 and "ca.crt: exists already" in err and "--ca-dir" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("admin", "certs", "--out", tmp_path / "other", "--host", "not a host")
    assert code == 2 and "--host: 'not a host' is neither an IP address nor a DNS name" in err
    assert not (tmp_path / "other").exists()   # checked before anything is written


def test_a_network_address_is_served_plain_only_on_purpose():
    for host in ("127.0.0.1", "127.0.1.1", "::1", "localhost"):
        check_listen(host, tls=False, insecure=False)
    for host in ("0.0.0.0", "::", "10.0.0.5", "node1.example.com"):
        with pytest.raises(UserError) as refused:
            check_listen(host, tls=False, insecure=False)
        assert refused.value.exit_code == 2 and "--tls-cert" in refused.value.line()
        check_listen(host, tls=True, insecure=False)
        check_listen(host, tls=False, insecure=True)


def test_the_server_refuses_plain_http_on_all_addresses_before_it_starts():
    command = [sys.executable, "-m", "elastrain", "server", "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("error: --host: refusing to serve plain HTTP on 0.0.0.0: API tokens would cross "
                                   "the network unencrypted — pass --tls-cert and --tls-key (`elastrain admin certs` "
                                   "makes them), or --insecure to serve plain HTTP anyway")


def test_unusable_tls_files_are_one_line_before_the_server_starts(tmp_path):
    issued = issue_cert(tmp_path, ["127.0.0.1"])
    other = issue_cert(tmp_path, ["127.0.0.1"], name="other", ca_dir=tmp_path)
    with pytest.raises(UserError, match="--tls-key: TLS needs both"):
        check_server_tls(issued.cert, None)
    with pytest.raises(UserError, match="KEY_VALUES_MISMATCH"):
        check_server_tls(issued.cert, other.key)
    check_server_tls(issued.cert, issued.key)
    done = subprocess.run([sys.executable, "-m", "elastrain", "server", "--tls-cert", str(tmp_path / "missing.crt"),
                           "--tls-key", str(issued.key), "--port", str(free_port())],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"--tls-cert: cannot read {tmp_path / 'missing.crt'} (No such file or directory)" in done.stderr


@pytest.fixture
def https_server(tmp_path, elastrain_home, ray_address, cli):
    """A real `elastrain server` over HTTPS on 127.0.0.1 with a certificate of a new CA: its URL,
    the CA certificate, a token of user ada, and the server's log file."""
    issued = issue_cert(tmp_path / "certs", ["127.0.0.1"])
    token = cli("admin", "create-user", "ada")[1].strip().splitlines()[-1]
    port, log = free_port(), tmp_path / "server.log"
    process = start_server(elastrain_home, port, ray_address, "--tls-cert", issued.cert, "--tls-key", issued.key,
                           verify=ssl.create_default_context(cafile=issued.ca_cert), log=log)
    yield f"https://127.0.0.1:{port}", issued.ca_cert, token, log
    # Killed, not terminated: a graceful stop waits up to 30 s for the TLS goodbye of each idle
    # connection this process's clients still hold open.
    process.kill()
    process.wait(timeout=30)


def test_clients_reach_an_https_server_only_when_they_trust_its_ca(cli, https_server, tmp_path, monkeypatch):
    url, ca_cert, token, log = https_server
    ada = ["--server", url, "--token", token]
    code, out, _ = cli("jobs", *ada, "--ca-cert", ca_cert, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["jobs"] == []
    code, out, err = cli("jobs", *ada, "--json")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{url}: the server's TLS certificate is not trusted (unable to get local issuer certificate)" in err
    assert "pass --ca-cert FILE or set ELASTRAIN_CA_CERT" in err and token not in err
    other_ca = issue_cert(tmp_path / "other", ["127.0.0.1"]).ca_cert   # a CA that did not sign it
    code, _, err = cli("jobs", *ada, "--ca-cert", other_ca)
    assert code == 1 and "not trusted" in err
    code, _, err = cli("jobs", "--server", url.replace("127.0.0.1", "localhost"), "--token", token,
                       "--ca-cert", ca_cert)
    assert code == 1 and "certificate is not for this address" in err and "elastrain admin certs --host" in err
    code, _, err = cli("jobs", *ada, "--ca-cert", tmp_path / "missing.crt")
    assert code == 2 and "--ca-cert: cannot read" in err
    monkeypatch.setenv("ELASTRAIN_CA_CERT", str(ca_cert))
    code, out, _ = cli("jobs", *ada, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["total"] == 0
    assert Remote(url, token, ca_cert).call("GET", "/jobs")["jobs"] == []   # the Python API's client
    login = httpx.post(f"{url}/ui/login", json={"token": token}, verify=ssl.create_default_context(cafile=ca_cert))
    assert "; Secure" in login.headers["set-cookie"]   # the dashboard's session cookie travels only over TLS
    server_output = log.read_text()
    assert f"elastrain API on {url}/api/v1" in server_output and token not in server_output


def test_a_token_read_from_a_file_works_and_no_process_shows_a_token(cli, https_server, tmp_path):
    url, ca_cert, token, _ = https_server
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    code, out, _ = cli("jobs", "--server", url, "--token", f"@{token_file}", "--ca-cert", ca_cert, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["total"] == 0
    (tmp_path / "empty").write_text("")
    code, _, err = cli("jobs", "--server", url, "--token", f"@{tmp_path / 'empty'}", "--ca-cert", ca_cert)
    assert code == 2 and "--token: the token file" in err and "is empty" in err
    # The server, its Ray and every process they started: no command line carries the token.
    shown = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            shown.append(cmdline.read_bytes())
        except OSError:   # the process ended meanwhile
            continue
    assert shown and not any(token.encode() in line for line in shown)
