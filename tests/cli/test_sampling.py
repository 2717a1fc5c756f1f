"""Issue 11: sampling options for OpenAI-compatible servers, end to end."""

from __future__ import annotations

import json

import pytest
from daily_helpers import Dirs, Koala, openai_sse
from standin import Script, StandIn


def openai(koala: Koala, server: StandIn, *args: str, stdin: bytes = b""):  # type: ignore[no-untyped-def]
    base = ["--provider", "openai", "--base-url", server.base_url, "-m", "gpt-4o-mini", "--retries", "0"]
    return koala("ask", *base, *args, stdin=stdin)


def test_flags_go_into_the_request(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("ok")]))
    ran = openai(
        koala,
        server,
        "--temperature",
        "0",
        "--top-p",
        "0.5",
        "--max-tokens",
        "64",
        "--seed",
        "42",
        "--stop",
        "END",
        "--stop",
        "\n\n",
        "-o",
        "top_k=40",
        "-o",
        'response_format={"type": "text"}',
        "-o",
        "user=ann",
        "summarise",
    )
    assert ran.status == 0, ran.err
    body = server.requests[0].json()
    assert body["temperature"] == 0 and body["top_p"] == 0.5 and body["max_tokens"] == 64 and body["seed"] == 42
    assert body["stop"] == ["END", "\n\n"]
    assert body["top_k"] == 40 and body["response_format"] == {"type": "text"} and body["user"] == "ann"
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True


def test_no_options_no_fields(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("ok")]))
    assert openai(koala, server, "hi").status == 0
    assert set(server.requests[0].json()) == {"model", "messages", "stream"}


def test_profile_options_and_flags_win(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    dirs.write_config(
        f'[default]\noptions = {{ seed = 1, top_k = 5 }}\n[profiles.o]\nprovider = "openai"\nmodel = "m"\n'
        f'base_url = "{server.base_url}"\noptions = {{ temperature = 0.7, top_k = 6 }}\n'
    )
    server.push(Script([openai_sse("ok")]))
    assert koala("ask", "-p", "o", "--temperature", "0.1", "hi").status == 0
    body = server.requests[0].json()
    assert (body["temperature"], body["top_k"], body["seed"]) == (0.1, 6, 1)


def test_dry_run_and_the_start_record_show_them(koala: Koala, server: StandIn) -> None:
    dry = openai(koala, server, "--dry-run", "--json", "--temperature", "0.3", "hi")
    assert json.loads(dry.out)["body"]["temperature"] == 0.3
    server.push(Script([openai_sse("ok")]))
    ran = openai(koala, server, "--json", "--temperature", "0.3", "-o", "top_k=2", "hi")
    start = json.loads(ran.out.splitlines()[0])
    assert start == {"type": "start", "model": "gpt-4o-mini", "options": {"top_k": 2, "temperature": 0.3}}
    server.push(Script([openai_sse("ok")]))
    plain = openai(koala, server, "--json", "hi")
    assert json.loads(plain.out.splitlines()[0]) == {"type": "start", "model": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--temperature", "0"], "--temperature"),
        (["--top-p", "1"], "--top-p"),
        (["--max-tokens", "5"], "--max-tokens"),
        (["--seed", "1"], "--seed"),
        (["--stop", "x"], "--stop"),
        (["-o", "top_k=1"], "-o top_k"),
    ],
)
@pytest.mark.parametrize("command", ["ask", "chat", "batch"])
def test_the_koala_provider_refuses_naming_the_option(
    koala: Koala, server: StandIn, args: list[str], named: str, command: str
) -> None:
    ran = koala(command, "--base-url", server.base_url, *args, *(["hi"] if command == "ask" else []), stdin=b"hi\n")
    assert ran.status == 2
    assert ran.error_line().startswith(f"{named}: the koala provider takes no sampling options")
    assert server.requests == []


def test_a_koala_profile_with_options_is_refused_naming_it(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    dirs.write_config("[profiles.k]\noptions = { temperature = 0 }\n")
    ran = koala("ask", "-p", "k", "--base-url", server.base_url, "hi")
    assert ran.status == 2
    assert ran.error_line().startswith("[profiles.k] options.temperature: the koala provider")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--temperature", "nan"], "--temperature must be a number of 0 or more"),
        (["--temperature", "-1"], "--temperature must be a number of 0 or more"),
        (["--top-p", "inf"], "--top-p"),
        (["--max-tokens", "0"], "--max-tokens must be 1 or more"),
        (["-o", "nokey"], "-o takes KEY=VALUE"),
        (["-o", "=1"], "-o takes KEY=VALUE"),
        (["-o", "messages=[]"], "-o cannot set 'messages'"),
        (["-o", "stream=false"], "-o cannot set 'stream'"),
        (["--temperature", "warm"], "'warm' is not a valid float"),
        (["--seed", "1.5"], "'1.5' is not a valid int"),
    ],
)
def test_bad_values_are_exit_2(koala: Koala, server: StandIn, args: list[str], words: str) -> None:
    ran = openai(koala, server, *args, "hi")
    assert ran.status == 2
    assert words in ran.error_line()
    assert server.requests == []


def test_batch_job_options_over_the_commands(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("a")]), Script([openai_sse("b")]))
    jobs = (
        b'{"id": 1, "prompt": "p1", "options": {"temperature": 0.9, "top_k": 3}}\n'
        b'{"id": 2, "prompt": "p2"}\n'
        b'{"id": 3, "prompt": "p3", "options": {"model": "x"}}\n'
        b'{"id": 4, "prompt": "p4", "options": [1]}\n'
    )
    ran = koala(
        "batch",
        "--provider",
        "openai",
        "--base-url",
        server.base_url,
        "-m",
        "m",
        "--concurrency",
        "1",
        "--temperature",
        "0.1",
        stdin=jobs,
    )
    results = [json.loads(line) for line in ran.out.splitlines()]
    assert [r["ok"] for r in results] == [True, True, False, False]
    bodies = sorted((r.json() for r in server.requests), key=lambda b: b["messages"][-1]["content"])
    assert (bodies[0]["temperature"], bodies[0]["top_k"]) == (0.9, 3)
    assert bodies[1]["temperature"] == 0.1 and "top_k" not in bodies[1]
    assert "\"options\" cannot set 'model'" in results[2]["error"]["message"]
    assert results[2]["error"]["exit_status"] == 2
    assert '"options" must be a JSON object' in results[3]["error"]["message"]


def test_batch_job_options_with_the_koala_provider_fail_that_job(koala: Koala, server: StandIn) -> None:
    ran = koala("batch", "--base-url", server.base_url, stdin=b'{"id": 1, "prompt": "p", "options": {"seed": 1}}\n')
    result = json.loads(ran.out)
    assert ran.status == 2 and result["ok"] is False
    assert result["error"] == {"message": "seed: the koala provider takes no sampling options", "exit_status": 2}


def test_chat_sends_them_every_turn(koala: Koala, server: StandIn) -> None:
    server.push(Script([openai_sse("a")]), Script([openai_sse("b")]))
    ran = koala(
        "chat", "--provider", "openai", "-m", "m", "--base-url", server.base_url, "--seed", "7", stdin=b"one\ntwo\n"
    )
    assert ran.status == 0, ran.err
    assert [r.json()["seed"] for r in server.requests] == [7, 7]
