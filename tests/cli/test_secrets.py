"""Issue 8, "Secrets never printed", through `koala` in process (what is printed or masked
needs no real process; the terminal cases are in tests/process/test_secrets.py).

Keys from the environment are checked like --api-key; credentials in URLs are masked the way
httpx parses them (the user-info is everything before the LAST `@` of the authority), and a
password holding `@`, a space, `/` or `:` is masked whole; text a server controls (reason
phrase, content type, header values, body excerpts, JSON messages) is made inert on stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import closed_port, invoke, one_line_error
from standin import Script, StandIn

KEY = "sk-test-0123456789abcdef"
OSC = "\x1b]0;pwned\x07"  # retitles a terminal


def koala(
    *args: str, env: dict[str, str | None] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return invoke(*args, stdin=stdin, env=env)


def assert_inert(data: bytes) -> None:
    """No control character but the line ends (not even a tab); no DEL, no C1 control."""
    text = data.decode("utf-8", "replace")
    for line in text.split("\n"):
        bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0]
        assert not bad, (bad, text)


# --- keys from the environment -------------------------------------------------------------


@pytest.mark.parametrize(("variable", "provider"), [("KOALA_API_KEY", "koala"), ("OPENAI_API_KEY", "openai")])
@pytest.mark.parametrize("raw", [KEY + "\r", f"  {KEY}\r\n", f"\t{KEY} "], ids=["crlf-env-file", "spaces", "tab"])
def test_env_key_surrounding_whitespace_is_stripped(server: StandIn, variable: str, provider: str, raw: str) -> None:
    if provider == "openai":
        server.default = Script(
            [b'data: {"choices":[{"delta":{"content":"Hello"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']
        )
    result = koala(
        "ask",
        "--provider",
        provider,
        "--base-url",
        server.base_url,
        "-m",
        "m",
        "--retries",
        "0",
        "hi",
        env={variable: raw},
    )
    assert result.returncode == 0, result.stderr
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("variable", "provider"), [("KOALA_API_KEY", "koala"), ("OPENAI_API_KEY", "openai")])
@pytest.mark.parametrize(
    "raw", [KEY + "\x1bX", KEY + "é", KEY + "\tX", KEY + "\x7f"], ids=["esc", "non-ascii", "tab", "del"]
)
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["raw", "json"])
def test_env_key_not_printable_is_a_usage_error(
    server: StandIn, variable: str, provider: str, raw: str, json_flag: list[str]
) -> None:
    args = ["ask", "--provider", provider, "--base-url", server.base_url, *json_flag, "hi"]
    result = koala(*args, env={variable: raw})
    assert result.returncode == 2
    line = one_line_error(result)
    assert variable in line  # says where the bad key came from
    assert KEY.encode() not in result.stdout + result.stderr
    assert server.requests == []


@pytest.mark.parametrize("raw", [KEY + "\r", KEY + "\x1b"], ids=["cr", "esc"])
def test_env_key_never_in_debug_or_dry_run(server: StandIn, raw: str) -> None:
    for extra in (["--dry-run"], ["--dry-run", "--json"], ["--debug"], ["--debug", "--json"]):
        result = koala("ask", "--base-url", server.base_url, "--retries", "0", *extra, "hi", env={"KOALA_API_KEY": raw})
        assert result.returncode in (0, 2), (extra, result.stderr)
        assert b"Traceback" not in result.stderr or "--debug" in extra
        assert KEY.encode() not in result.stdout + result.stderr, extra


def test_bad_key_in_a_wrapped_h11_error_is_never_shown(server: StandIn) -> None:
    """A key h11 refuses used to come back inside 'Illegal header value b'Bearer sk-...''."""
    for extra in ([], ["--debug"], ["--json"]):
        result = koala(
            "ask",
            "--base-url",
            server.base_url,
            "--retries",
            "0",
            *extra,
            "hi",
            env={"KOALA_API_KEY": KEY + "\n\x0b"},
        )
        assert KEY.encode() not in result.stdout + result.stderr, (extra, result.stderr)
        assert b"sk-test" not in result.stdout + result.stderr


# --- credentials in URLs -------------------------------------------------------------------

PASSWORDS = ["hun@ter2", "hun ter2", "hun/ter2", "hun:ter2", "hun?ter2", "hun#ter2"]


def leaked(result: subprocess.CompletedProcess[bytes]) -> bool:
    out = result.stdout + result.stderr
    return b"hun" in out or b"ter2" in out


@pytest.mark.parametrize("password", PASSWORDS)
def test_proxy_password_is_masked_whole(server: StandIn, password: str) -> None:
    proxy = f"http://bob:{password}@127.0.0.1:{closed_port()}"
    for debug in ([], ["--debug"]):
        result = koala("ask", "--base-url", server.base_url, "--retries", "0", "--proxy", proxy, *debug, "hi")
        assert result.returncode in (2, 3), result.stderr
        assert b"Traceback" not in result.stderr or debug
        assert not leaked(result), result.stderr


@pytest.mark.parametrize("password", PASSWORDS)
def test_env_proxy_password_is_masked_whole(server: StandIn, password: str) -> None:
    env: dict[str, str | None] = {"NO_PROXY": None, "no_proxy": None}
    env["HTTP_PROXY"] = f"http://bob:{password}@127.0.0.1:{closed_port()}"
    result = koala("ask", "--base-url", "http://koala.invalid", "--retries", "0", "hi", env=env)
    assert result.returncode in (2, 3), result.stderr
    assert b"Traceback" not in result.stderr
    assert not leaked(result), result.stderr


@pytest.mark.parametrize("password", PASSWORDS)
def test_base_url_password_is_masked_whole(server: StandIn, password: str) -> None:
    port = closed_port()
    base = f"http://bob:{password}@127.0.0.1:{port}"
    for extra in (["--dry-run"], ["--dry-run", "--json"], ["--retries", "0"], ["--retries", "0", "--json"]):
        result = koala("ask", "--base-url", base, *extra, "hi")
        assert result.returncode in (0, 2, 3), (extra, result.stderr)
        assert b"Traceback" not in result.stderr
        assert not leaked(result), (extra, result.stdout, result.stderr)


def test_at_sign_in_password_masks_up_to_the_last_at(server: StandIn) -> None:
    """httpx takes the user-info up to the LAST `@`: the host shown is the one dialled."""
    port = closed_port()
    result = koala("ask", "--dry-run", "--base-url", f"http://bob:hun@ter2@127.0.0.1:{port}", "hi")
    assert result.returncode == 0, result.stderr
    first = result.stdout.decode().splitlines()[0]
    assert first == f"POST http://***@127.0.0.1:{port}/api/gpt/"


@pytest.mark.parametrize("password", ["hun ter2", "hun:ter2", "hun@ter2"])
def test_base_url_credentials_never_reach_origin_or_referer(server: StandIn, password: str) -> None:
    base = server.base_url.replace("http://", f"http://bob:{password}@")
    result = koala("ask", "--base-url", base, "--retries", "0", "hi")
    assert not leaked(result), result.stderr
    for request in server.requests:
        for name in ("origin", "referer"):
            value = request.headers.get(name, "")
            assert "hun" not in value and "ter2" not in value, (name, value)


# --- text a server controls ----------------------------------------------------------------


def test_reason_phrase_is_inert_in_the_error_line(server: StandIn) -> None:
    server.push(Script([b"x"], status=400, reason=f"Bad{OSC}Request", headers={"Content-Type": "text/plain"}))
    result = koala("ask", "--base-url", server.base_url, "--retries", "0", "hi")
    assert result.returncode == 4
    line = one_line_error(result)
    assert_inert(result.stderr)
    assert "pwned" in line and "\\x1b" in line  # shown, escaped


@pytest.mark.usefixtures("quick_backoff")
def test_reason_phrase_is_inert_in_the_retry_notice(server: StandIn) -> None:
    server.push(Script([b""], status=503, reason=f"Busy{OSC}", headers={"Content-Type": "text/plain"}))
    result = koala("ask", "--base-url", server.base_url, "--retries", "1", "hi")
    assert result.returncode == 0, result.stderr
    assert b"pwned" in result.stderr
    assert_inert(result.stderr)


@pytest.mark.parametrize(
    "script",
    [
        Script([b"nope"], headers={"Content-Type": "text/plain\x1b[2J"}),
        Script([b"<html>hi</html>"], headers={"Content-Type": "text/ht\x9b2Jml"}),
        Script([b""], status=302, headers={"Location": "http://x/\x9b2J\x1b[5m", "Content-Type": "text/plain"}),
        Script([b"bad \x1b[2J \x9b2J body"], status=500, headers={"Content-Type": "text/plain"}),
        Script(
            [b'{"error":{"message":"bad\\u001b]0;pwned\\u0007 key \\u009b2J"}}'],
            status=401,
            headers={"Content-Type": "application/json"},
        ),
    ],
    ids=["content-type-esc", "content-type-c1", "location", "body", "json-message"],
)
def test_server_text_is_inert_in_error_lines(server: StandIn, script: Script) -> None:
    server.push(script, script)
    for json_flag in ([], ["--json"]):
        result = koala("ask", "--base-url", server.base_url, "--retries", "0", *json_flag, "hi")
        assert result.returncode in (3, 4, 5)
        one_line_error(result)
        assert_inert(result.stderr)


@pytest.mark.usefixtures("quick_backoff")
def test_batch_retry_notices_are_inert(server: StandIn) -> None:
    server.push(Script([b""], status=503, reason=f"Busy{OSC}", headers={"Content-Type": "text/plain"}))
    result = koala("batch", "--lines", "--base-url", server.base_url, "--retries", "1", stdin=b"hi\n")
    assert result.returncode == 0, result.stderr
    assert b"pwned" in result.stderr
    assert_inert(result.stderr)


@pytest.mark.parametrize("password", ["hun@ter2", "hun ter2", "hun:ter2"])
def test_config_show_masks_url_credentials(tmp_path: Path, password: str) -> None:
    config = tmp_path / ".config" / "koala"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(f'[default]\nproxy = "http://bob:{password}@127.0.0.1:1"\n')
    env = {"KOALA_BASE_URL": f"http://bob:{password}@127.0.0.1:2", "HOME": str(tmp_path), "XDG_CONFIG_HOME": None}
    for json_flag in ([], ["--json"]):
        result = koala("config", "show", *json_flag, env=env)
        assert result.returncode == 0, result.stderr
        assert b"127.0.0.1:1" in result.stdout and b"127.0.0.1:2" in result.stdout
        assert not leaked(result), result.stdout


def test_credential_query_parameters_are_masked(server: StandIn) -> None:
    """A careless --base-url with the key in its query (Google's ?key=) never shows it."""
    base = f"http://127.0.0.1:{closed_port()}/v1?key={KEY}"
    for extra in (["--dry-run"], ["--dry-run", "--json"], ["--retries", "0"], ["--retries", "0", "--debug"]):
        result = koala("ask", "--base-url", base, *extra, "hi")
        assert result.returncode in (0, 3), (extra, result.stderr)
        assert KEY.encode() not in result.stdout + result.stderr, extra
