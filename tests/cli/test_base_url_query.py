"""The command (in process): a base URL's query string reaches the server after the endpoint path."""

from __future__ import annotations

from conftest import invoke
from standin import StandIn


def test_query_string_follows_the_endpoint(server: StandIn) -> None:
    result = invoke("ask", "--base-url", f"{server.base_url}/pre?api-version=2#top", "hi")
    assert result.returncode == 0, result.stderr
    assert [r.path for r in server.requests] == ["/pre/api/gpt/?api-version=2"]


def test_dry_run_shows_it(server: StandIn) -> None:
    result = invoke("ask", "--dry-run", "--base-url", "http://127.0.0.1:9/pre?api-version=2#top", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"POST http://127.0.0.1:9/pre/api/gpt/?api-version=2\n")
