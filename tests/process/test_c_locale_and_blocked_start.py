"""Start-up in odd environments: arguments under a C locale, and reads that block before any
request (a FIFO for a config file, a slow stdin) ended by Ctrl-C."""

import os
import select
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import KOALA, WAIT, popen_koala, run_koala, stop

C_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0", "LANG": None, "LC_CTYPE": None, "PYTHONIOENCODING": None}


@pytest.mark.parametrize("where", ["prompt", "system", "model"])
def test_utf8_arguments_under_a_c_locale_are_text(where: str) -> None:
    args = {"prompt": ["café"], "system": ["-s", "réponds", "x"], "model": ["-m", "modèle", "x"]}[where]
    result = run_koala("ask", "--dry-run", "--json", *args, env=C_LOCALE)
    assert result.returncode == 0, result.stderr
    body = result.stdout.decode("utf-8")
    assert {"prompt": "café", "system": "réponds", "model": "modèle"}[where] in body


def test_arguments_that_are_not_utf8_are_still_refused_under_a_c_locale() -> None:
    result = run_koala("ask", "--dry-run", b"caf\xe9", env=C_LOCALE)
    assert result.returncode == 2
    assert result.stderr == b"koala: error: the prompt is not valid UTF-8\n"
    assert result.stdout == b""


def _interrupted(proc: "subprocess.Popen[bytes]") -> tuple[int, bytes]:
    """SIGINT once koala is blocked reading (the FIFO/pipe has no writer yet), then its end."""
    assert proc.stderr is not None
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        stop(proc)
    return proc.returncode, err


def _blocked_on(proc: "subprocess.Popen[bytes]", what: str) -> None:
    """Wait (bounded) until the process sleeps in the kernel on ``what`` (its wchan)."""
    wchan = Path(f"/proc/{proc.pid}/wchan")
    for _ in range(int(WAIT / 0.01)):
        if what in wchan.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        select.select([], [], [], 0.01)  # polls the state; the wait is not the synchronisation
    raise AssertionError(f"koala never blocked on {what}")


def test_ctrl_c_while_the_config_fifo_has_no_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    proc = popen_koala("ask", "--dry-run", "hi", env={**os.environ, "KOALA_CONFIG": str(fifo)})
    _blocked_on(proc, "wait_for_partner")  # opening a FIFO with no writer
    status, err = _interrupted(proc)
    assert status == 130
    assert err == b"koala: interrupted by SIGINT\n"


def test_ctrl_c_while_stdin_is_still_open() -> None:
    reader, writer = os.pipe()
    try:
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        proc = subprocess.Popen([*KOALA, "ask", "--dry-run"], stdin=reader, **pipes)
        _blocked_on(proc, "pipe_read")
        status, err = _interrupted(proc)
    finally:
        os.close(reader)
        os.close(writer)
    assert status == 130
    assert err == b"koala: interrupted by SIGINT\n"


def test_url_credentials_under_a_c_locale_are_masked_not_a_traceback() -> None:
    url = "https://u:pässwörd@example.com/?api_key=sëcret"
    result = run_koala("ask", "--dry-run", "--base-url", url, "hi", env=C_LOCALE)
    assert result.returncode == 0, result.stderr
    assert "pässwörd".encode() not in result.stdout and "sëcret".encode() not in result.stdout
    assert b"***" in result.stdout


def test_proxy_credentials_under_a_c_locale_are_not_a_traceback() -> None:
    env = {**C_LOCALE, "HTTPS_PROXY": "http://u:pässwörd@127.0.0.1:9"}
    result = run_koala("ask", "--dry-run", "--proxy", "http://u:pässwörd@127.0.0.1:9", "hi", env=env)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    assert "pässwörd".encode() not in result.stdout + result.stderr


def test_a_profile_name_under_a_c_locale(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[profiles."prôfile"]\nmodel = "chosen"\n', encoding="utf-8")
    config.chmod(0o600)
    env = {**C_LOCALE, "KOALA_CONFIG": str(config)}
    result = run_koala("ask", "--dry-run", "--json", "-p", "prôfile", "hi", env=env)
    assert result.returncode == 0, result.stderr
    assert b'"model":"chosen"' in result.stdout
