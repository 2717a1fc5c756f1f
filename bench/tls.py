"""A private certificate authority for the loopback HTTPS benchmarks, made at run time.

``make_pki(folder)`` writes, with the ``openssl`` command line tool (ECDSA P-256, valid two
days): ``ca.pem`` (the authority), ``server.pem`` + ``server.key`` (for 127.0.0.1 and
localhost, signed by it) and ``bundle.pem`` -- certifi's bundle followed by the private CA,
so a client pointed at it with ``SSL_CERT_FILE`` loads as many certificates as it would on a
real machine (loading the bundle is part of what a client costs).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PKI", "make_pki"]

_SERVER_EXTENSIONS = """\
subjectAltName=IP:127.0.0.1,DNS:localhost
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


@dataclass(frozen=True)
class PKI:
    ca: Path
    cert: Path
    key: Path
    bundle: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _system_bundle() -> str:
    """certifi's bundle when it is installed here (it is with httpx), else nothing."""
    try:
        import certifi
    except ImportError:
        return ""
    return Path(certifi.where()).read_text("ascii")


def make_pki(folder: Path) -> PKI:
    if shutil.which("openssl") is None:
        raise RuntimeError("the HTTPS benchmarks need the openssl command line tool")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=folder)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=koala bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=folder)
    _openssl("req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr", cwd=folder)
    (folder / "server.ext").write_text(_SERVER_EXTENSIONS)
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.pem", cwd=folder,
    )  # fmt: skip
    bundle = folder / "bundle.pem"
    system = _system_bundle()
    bundle.write_text(system + ("\n" if system and not system.endswith("\n") else "") + (folder / "ca.pem").read_text())
    return PKI(folder / "ca.pem", folder / "server.pem", folder / "server.key", bundle)
