"""Issue 11: token usage -- asked for only with --usage or a profile's stream_usage, and reported
in the done record, --stats, batch results and the request log."""

from __future__ import annotations

import json
from pathlib import Path

from daily_helpers import Dirs, Koala, openai_sse
from standin import Script, StandIn

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def openai(koala: Koala, server: StandIn, *args: str, stdin: bytes = b""):  # type: ignore[no-untyped-def]
    return koala("ask", "--provider", "openai", "-m", "m", "--base-url", server.base_url, *args, stdin=stdin)


def test_include_usage_only_when_asked(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("a")]), Script([openai_sse("b", usage=USAGE)]))
    assert openai(koala, server, "hi").status == 0
    assert "stream_options" not in server.requests[0].json()
    assert openai(koala, server, "--usage", "hi").status == 0
    assert server.requests[1].json()["stream_options"] == {"include_usage": True}


def test_a_profile_asks_for_it(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    dirs.write_config(
        f'[profiles.o]\nprovider = "openai"\nbase_url = "{server.base_url}"\nmodel = "m"\nstream_usage = true\n'
    )
    dry = koala("ask", "-p", "o", "--dry-run", "--json", "hi")
    assert json.loads(dry.out)["body"]["stream_options"] == {"include_usage": True}


def test_usage_with_the_koala_provider_is_refused(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    ran = koala("ask", "--base-url", server.base_url, "--usage", "hi")
    assert ran.status == 2 and ran.error_line().startswith("--usage: the koala provider")
    dirs.write_config("[profiles.k]\nstream_usage = true\n")
    ran = koala("ask", "-p", "k", "--base-url", server.base_url, "hi")
    assert ran.status == 2 and ran.error_line().startswith("[profiles.k] stream_usage: the koala provider")
    assert server.requests == []


def test_usage_in_done_stats_and_log(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    server.push(Script([openai_sse("a", usage=USAGE)]), Script([openai_sse("b", usage=USAGE)]))
    ran = openai(koala, server, "--usage", "--json", "--log", str(tmp_path / "log"), "hi")
    assert ran.status == 0, ran.err
    done = json.loads(ran.out.splitlines()[-1])
    assert done["type"] == "done" and done["usage"] == USAGE
    assert json.loads((tmp_path / "log").read_text())["usage"] == USAGE
    ran = openai(koala, server, "--usage", "--stats", "hi")
    assert "usage: 9 prompt + 3 completion = 12 tokens" in ran.err


def test_usage_in_batch_results(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("a", usage=USAGE)]))
    ran = koala(
        "batch", "--provider", "openai", "-m", "m", "--base-url", server.base_url, "--usage", "--lines", stdin=b"q\n"
    )
    assert ran.status == 0, ran.err
    assert json.loads(ran.out)["usage"] == USAGE
