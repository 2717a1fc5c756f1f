"""A host name that does not exist is not retried: one line, exit 3, no retry notices.

Names under ``.invalid`` never resolve (RFC 6761) and need no network; on a machine whose
resolver cannot even say so (no network at all: a temporary failure, which is retried),
the test is skipped.  The temporary failure itself is simulated in tests/unit/test_transport.py.
"""

from __future__ import annotations

import socket

import pytest
from conftest import invoke

NAME = "koala-test.invalid"


def test_a_host_that_does_not_exist_is_not_retried() -> None:
    try:
        socket.getaddrinfo(NAME, 80)
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            pytest.skip(f"this resolver answers {exc.strerror!r} for {NAME}")
    else:
        pytest.skip(f"this resolver finds {NAME}")
    result = invoke("ask", "--base-url", f"http://{NAME}", "--retries", "3", "hi")
    assert result.returncode == 3, result.stderr
    err = result.stderr.decode()
    assert "Traceback" not in err and "retrying" not in err, err
    (line,) = err.splitlines()
    assert line.startswith("koala: error: cannot connect to koala-test.invalid: no such host"), line
