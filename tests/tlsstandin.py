"""A private CA made at test time (openssl's command line) and the stand-in server behind TLS.

``make_pki(folder)`` writes a CA, a second CA nobody trusts, and server certificates signed by
the first: a good one (``localhost``, ``127.0.0.1``), one for another host name, and one that
has expired.  ``TLSStandIn`` is ``StandIn`` speaking HTTPS with one of them; it counts the
connections it accepted, so a test can tell that a refused handshake was not retried.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standin import GATE_TIMEOUT, StandIn

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA a test trusts (SSL_CERT_FILE)
    other_ca: Path  # a CA that signed nothing here
    good: tuple[Path, Path]  # (certificate, key) for localhost and 127.0.0.1
    wrong_host: tuple[Path, Path]  # for other.test only
    expired: tuple[Path, Path]  # for 127.0.0.1, expired yesterday


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", *_EC, "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN=koala test {name}")
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], names: str, days: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    _openssl("req", *_EC, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName={names}\n")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", days, "-extfile", ext,
    )  # fmt: skip
    return cert, key


def make_pki(folder: Path) -> Pki:
    """Every certificate a TLS test needs, made now; skips the test without openssl."""
    if OPENSSL is None:
        pytest.skip("needs the openssl command")
    ca = _ca(folder, "ca")
    other = _ca(folder, "other-ca")
    good = _leaf(folder, "good", ca, "DNS:localhost,IP:127.0.0.1", "2")
    wrong = _leaf(folder, "wrong-host", ca, "DNS:other.test", "2")
    expired = _leaf(folder, "expired", ca, "DNS:localhost,IP:127.0.0.1", "-1")  # not after < not before
    return Pki(ca[0], other[0], good, wrong, expired)


class TLSStandIn(StandIn):
    """``StandIn`` behind TLS with the given certificate; ``connections`` counts handshakes tried."""

    def __init__(self, chain: tuple[Path, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*chain)
        self.connections = 0

    @property
    def base_url(self) -> str:
        return super().base_url.replace("http://", "https://")

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.settimeout(GATE_TIMEOUT)
        try:
            wrapped = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError):  # the client refused our certificate, or hung up
            conn.close()
            self.served.release()
            return
        super()._serve(wrapped)
