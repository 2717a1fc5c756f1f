"""Issue 8, "No tracebacks, whatever the environment", through `koala` in process: an
internationalised host in --base-url, and a key that is not ASCII.  (What needs a real
process -- closed stdin, terminals, full or closed outputs, rlimits -- is in
tests/process/test_hostile_env.py.)
"""

from __future__ import annotations

import pytest
from conftest import invoke, no_traceback
from standin import StandIn

# --- an internationalised host in --base-url -----------------------------------------------

IDN = "http://bücher.example:8"
PUNY = "http://xn--bcher-kva.example:8"


def test_idn_base_url_dry_run_shows_punycode() -> None:
    result = invoke("ask", "--dry-run", "--base-url", IDN, "hi")
    no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert f"POST {PUNY}/api/gpt/" in text
    assert f"Origin: {PUNY}\n" in text
    assert f"Referer: {PUNY}/chat\n" in text


@pytest.mark.parametrize("provider", ["koala", "openai"])
def test_idn_base_url_is_sent_as_punycode(server: StandIn, provider: str) -> None:
    """Through the stand-in as a forward proxy, so the name need not resolve."""
    result = invoke(
        "ask", "--provider", provider, "-m", "m", "--base-url", IDN, "--proxy", server.base_url, "--retries", "0", "hi"
    )
    no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr
    request = server.requests[0]
    assert request.path.startswith(PUNY + "/")
    if provider == "koala":
        assert request.headers["origin"] == PUNY
        assert request.headers["referer"] == PUNY + "/chat"


def test_non_ascii_key_is_a_usage_error_everywhere(server: StandIn) -> None:
    for env_or_option in ("env", "option"):
        key = "sk-ключ-0123456789"
        args = ["ask", "--base-url", server.base_url, "hi"]
        env: dict[str, str | None] = {}
        if env_or_option == "env":
            env["KOALA_API_KEY"] = key
        else:
            args[1:1] = ["--api-key", key]
        result = invoke(*args, env=env)
        no_traceback(result.stderr)
        assert result.returncode == 2, result.stderr
        assert key.encode() not in result.stderr + result.stdout
    assert server.requests == []
