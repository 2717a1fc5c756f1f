"""In process: a proxy that refuses (407, or squid's 403 deny) is named as the one that refused, exit 3,
whatever the target's scheme; an explicit --proxy is skipped for hosts in NO_PROXY, as curl
does.  The stand-in plays the proxy: a forward proxy sees the absolute URL, a tunnel CONNECT."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from conftest import invoke, one_line_error
from standin import Script, StandIn

PROXY_AUTH = Script(
    [b"<html><title>auth</title></html>"],
    407,
    "Proxy Authentication Required",
    {"Content-Type": "text/html", "Proxy-Authenticate": 'Basic realm="proxy"'},
)
SQUID_DENY = Script(
    [b"<html><head><title>ERROR: The requested URL could not be retrieved</title></head></html>"],
    403,
    "Forbidden",
    {"Content-Type": "text/html;charset=utf-8", "Server": "squid/6.13", "X-Squid-Error": "ERR_ACCESS_DENIED 0"},
)
TINYPROXY_DENY = Script(  # tinyproxy's own page: its Server, no Via (what it passes on has one)
    [b"<html><head><title>403 Access denied</title></head></html>"],
    403,
    "Access denied",
    {"Server": "tinyproxy/1.11.1", "Content-Type": "text/html"},
)
ORIGIN_FORBIDDEN = Script([b"no"], 403, "Forbidden", {"Content-Type": "text/plain", "Via": "1.1 squid"})


@pytest.fixture
def proxy() -> Iterator[StandIn]:
    with StandIn() as stand_in:
        yield stand_in


def koala(*args: str, no_proxy: str | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`koala ARGS` in process; NO_PROXY only as given (the autouse fixture clears it)."""
    return invoke(*args, stdin=stdin, env={"NO_PROXY": no_proxy} if no_proxy is not None else None)


@pytest.mark.parametrize("target", ["http://koala.invalid", "https://koala.invalid"])
def test_a_proxy_asking_for_credentials_is_the_proxys_refusal(proxy: StandIn, target: str) -> None:
    proxy.default = PROXY_AUTH
    url = proxy.base_url.replace("http://", "http://user:secret@")
    result = koala("ask", "--base-url", target, "--proxy", url, "--retries", "2", "hi")
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert re.search(r"proxy http://\*\*\*@127\.0\.0\.1:\d+ refused: 407 Proxy Authentication Required", line), line
    assert "secret" not in line
    assert len(proxy.requests) == 1  # a refusal is not retried
    expected = "http://koala.invalid/api/gpt/" if target.startswith("http:") else "koala.invalid:443"
    assert proxy.requests[0].path == expected


def test_squids_deny_page_is_the_proxys_refusal(proxy: StandIn) -> None:
    proxy.default = SQUID_DENY
    result = koala("ask", "--base-url", "http://koala.invalid", "--proxy", proxy.base_url, "hi")
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert re.search(r"proxy http://127\.0\.0\.1:\d+ refused: 403 Forbidden", line), line
    assert "ERR_ACCESS_DENIED" in line


def test_tinyproxys_deny_page_is_the_proxys_refusal(proxy: StandIn) -> None:
    proxy.default = TINYPROXY_DENY
    result = koala("ask", "--base-url", "http://koala.invalid", "--proxy", proxy.base_url, "hi")
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert re.search(r"proxy http://127\.0\.0\.1:\d+ refused: 403 Access denied", line), line


def test_the_targets_own_refusal_through_a_proxy_is_still_the_targets(proxy: StandIn) -> None:
    proxy.default = ORIGIN_FORBIDDEN
    result = koala("ask", "--base-url", "http://koala.invalid", "--proxy", proxy.base_url, "hi")
    assert result.returncode == 4, result.stderr
    line = one_line_error(result)
    assert "koala.invalid" in line and "403" in line and "refused" not in line


def test_a_proxys_refusal_in_batch_is_each_jobs_result(proxy: StandIn) -> None:
    proxy.default = PROXY_AUTH
    result = koala("batch", "--lines", "--base-url", "http://koala.invalid", "--proxy", proxy.base_url, stdin=b"a\nb\n")
    assert result.returncode == 3, result.stderr
    assert b"Traceback" not in result.stderr
    results = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in results] == [1, 2]
    for record in results:
        assert record["error"]["exit_status"] == 3
        assert re.search(r"proxy \S+ refused: 407", record["error"]["message"]), record


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "example.com, 127.0.0.1", "127.0.0.0/8"])
def test_an_explicit_proxy_is_skipped_for_hosts_in_no_proxy(server: StandIn, proxy: StandIn, no_proxy: str) -> None:
    proxy.default = PROXY_AUTH
    result = koala("ask", "--base-url", server.base_url, "--proxy", proxy.base_url, "hi", no_proxy=no_proxy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"
    assert proxy.requests == []
    assert len(server.requests) == 1


def test_no_proxy_matches_domains_and_their_subdomains_only(proxy: StandIn) -> None:
    proxy.default = Script([b'data: "via proxy"\n\n'])
    for host, no_proxy, proxied in [
        ("api.koala.invalid", "koala.invalid", False),
        ("api.koala.invalid", ".koala.invalid", False),
        ("koala.invalid", "koala.invalid", False),
        ("notkoala.invalid", "koala.invalid", True),
        ("koala.invalid", "other.invalid", True),
    ]:
        before = len(proxy.requests)
        result = koala(
            "ask", "--base-url", f"http://{host}", "--proxy", proxy.base_url, "--retries", "0", "hi", no_proxy=no_proxy
        )
        assert (len(proxy.requests) > before) == proxied, (host, no_proxy, result.stderr)
        if proxied:
            assert result.returncode == 0, result.stderr
        else:  # straight to a name that never resolves
            assert result.returncode == 3, result.stderr
