"""TLS against a private CA made at test time (`koala` in process): the trusted-certificate
settings are checked before anything is sent, and a certificate koala cannot trust is one line,
at once, exit 3."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import invoke, one_line_error
from tlsstandin import Pki, TLSStandIn


@pytest.fixture
def serve() -> Iterator[type[TLSStandIn]]:
    servers: list[TLSStandIn] = []

    class Started(TLSStandIn):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            servers.append(self)
            self.start()

    try:
        yield Started
    finally:
        for server in servers:
            server.stop()


def koala(
    *args: str, cafile: str | Path | None, cadir: str | Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`koala ARGS` in process with SSL_CERT_FILE and SSL_CERT_DIR set as given, else unset."""
    env = {
        "SSL_CERT_FILE": None if cafile is None else str(cafile),
        "SSL_CERT_DIR": None if cadir is None else str(cadir),
    }
    return invoke(*args, stdin=stdin, env=env)


def test_a_trusted_private_ca_works(pki: Pki, serve: type[TLSStandIn]) -> None:
    server = serve(pki.good)
    result = koala("ask", "--base-url", server.base_url, "hi", cafile=pki.ca)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"


@pytest.mark.parametrize("setting", ["missing", "not-pem", "folder"])
def test_a_bad_ssl_cert_file_is_a_configuration_error(
    pki: Pki, serve: type[TLSStandIn], tmp_path: Path, setting: str
) -> None:
    server = serve(pki.good)
    path = {"missing": tmp_path / "nowhere.pem", "not-pem": tmp_path / "junk.pem", "folder": tmp_path}[setting]
    if setting == "not-pem":
        path.write_bytes(b"this is no certificate\n")
    result = koala("ask", "--base-url", server.base_url, "hi", cafile=path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "SSL_CERT_FILE" in line
    assert str(path) in line
    batch = koala("batch", "--lines", "--base-url", server.base_url, cafile=path, stdin=b"one\ntwo\n")
    assert batch.returncode == 2, batch.stderr
    assert b"Traceback" not in batch.stderr
    results = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [r["id"] for r in results] == [1, 2]
    assert all(r["error"]["exit_status"] == 2 and "SSL_CERT_FILE" in r["error"]["message"] for r in results)
    assert server.connections == 0


def test_a_missing_ssl_cert_dir_is_a_configuration_error(pki: Pki, serve: type[TLSStandIn], tmp_path: Path) -> None:
    server = serve(pki.good)
    result = koala("ask", "--base-url", server.base_url, "hi", cafile=None, cadir=tmp_path / "nowhere")
    assert result.returncode == 2, result.stderr
    assert "SSL_CERT_DIR" in one_line_error(result)
    assert server.connections == 0


def test_ssl_cert_dir_is_used(pki: Pki, serve: type[TLSStandIn], tmp_path: Path) -> None:
    """A folder of certificates named by their hash, as `openssl rehash` (c_rehash) makes it."""
    folder = tmp_path / "certs"
    folder.mkdir()
    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(pki.ca)], capture_output=True, check=True, text=True
    ).stdout.strip()
    (folder / f"{digest}.0").write_bytes(pki.ca.read_bytes())
    server = serve(pki.good)
    result = koala("ask", "--base-url", server.base_url, "hi", cafile=None, cadir=folder)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("unknown-ca", "unable to get local issuer certificate"),
        ("wrong-host", "mismatch"),
        ("expired", "expired"),
    ],
)
def test_a_certificate_failure_is_one_line_and_not_retried(
    pki: Pki, serve: type[TLSStandIn], case: str, cause: str
) -> None:
    chain = {"unknown-ca": pki.good, "wrong-host": pki.wrong_host, "expired": pki.expired}[case]
    trusted = pki.other_ca if case == "unknown-ca" else pki.ca
    server = serve(chain)
    result = koala("ask", "--base-url", server.base_url, "--retries", "3", "hi", cafile=trusted)
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert cause in line
    assert "certificate" in line
    assert "SSL_CERT_FILE" in line and "SSL_CERT_DIR" in line
    assert server.connections == 1
    assert result.stdout == b""


def test_a_certificate_failure_in_batch_is_each_jobs_result(pki: Pki, serve: type[TLSStandIn]) -> None:
    server = serve(pki.wrong_host)
    result = invoke(
        "batch",
        "--lines",
        "--base-url",
        server.base_url,
        "--retries",
        "2",
        stdin=b"one\ntwo\n",
        env={"SSL_CERT_FILE": str(pki.ca)},
    )
    assert result.returncode == 3, result.stderr
    assert b"retrying" not in result.stderr
    assert result.stdout.count(b'"exit_status": 3') == 2
    assert server.connections == 2
