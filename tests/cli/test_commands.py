"""The small commands in process: `koala models`, `koala history show` and `koala completion`
(whose scripts are checked by the shells themselves)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import HISTORY, HOSTILE, MARKERS, WAIT, assert_inert, invoke, ndjson, one_line_error, write_jsonl
from standin import Pause, Repeat, Script, StandIn


def test_models_koala_lists_the_known_ones() -> None:
    result = invoke("models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "gpt-4o-mini (default)" in lines
    assert sum(line.endswith(" (default)") for line in lines) == 1
    assert len(lines) >= 2
    records = ndjson(invoke("models", "--json", "--provider", "koala").stdout)
    assert [r["id"] for r in records] == [line.removesuffix(" (default)") for line in lines]
    assert [r["id"] for r in records if r["default"] is True] == ["gpt-4o-mini"]
    assert {r["provider"] for r in records} == {"koala"}


MODEL_LIST = json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model"}, {"id": "big"}]}).encode()


def test_models_openai_asks_the_server(server: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-list")
    json_body = {"Content-Type": "application/json"}
    server.push(Script([MODEL_LIST], headers=json_body), Script([MODEL_LIST], headers=json_body))
    result = invoke("models", "--base-url", server.base_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"tiny\nbig\n", b"")
    request = server.requests[0]
    assert (request.method, request.path, request.headers["authorization"]) == ("GET", "/v1/models", "Bearer sk-list")
    records = ndjson(invoke("models", "--json", "--base-url", server.base_url + "/v1").stdout)
    assert records == [{"id": n, "default": False, "provider": "openai"} for n in ("tiny", "big")]


def test_models_openai_server_without_a_list(server: StandIn) -> None:
    server.push(Script([b"not here"], status=404, reason="Not Found", headers={"Content-Type": "text/plain"}))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url, "--retries", "0")
    assert (result.returncode, result.stdout) == (4, b"")
    assert "offers no model list" in one_line_error(result)


def trickle(seconds: float) -> list[object]:
    """A model list's first bytes, then one more every 0.1 s for ``seconds``: a live, endless body."""
    parts: list[object] = [b'{"data": [']
    for _ in range(int(seconds / 0.1)):
        parts += [Pause(0.1), b" "]
    return parts


def test_models_max_time_bounds_a_trickling_body(server: StandIn) -> None:
    server.push(Script(trickle(20), headers={"Content-Type": "application/json"}))
    started = time.monotonic()
    result = invoke(
        "models", "--provider", "openai", "--base-url", server.base_url, "--timeout", "5", "--max-time", "0.3"
    )
    assert time.monotonic() - started < 10  # not the 20 s the server would take
    assert (result.returncode, result.stdout) == (3, b"")
    assert "--max-time 0.3 s" in one_line_error(result)


def test_models_max_time_bounds_a_server_that_sends_no_head(server: StandIn) -> None:
    gate = threading.Event()  # opened at the end: the server says nothing until then
    server.push(Script([MODEL_LIST], before=[gate]))
    try:
        started = time.monotonic()
        result = invoke("models", "--provider", "openai", "--base-url", server.base_url, "--max-time", "0.3")
        assert time.monotonic() - started < 10
    finally:
        gate.set()
    assert (result.returncode, result.stdout) == (3, b"")
    assert "--max-time 0.3 s" in one_line_error(result)


def test_models_max_time_of_a_profile(server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.slow]\nprovider = "openai"\nbase_url = "{server.base_url}"\nmax_time = 0.3\n')
    monkeypatch.setenv("KOALA_CONFIG", str(config))
    server.push(Script(trickle(20), headers={"Content-Type": "application/json"}))
    result = invoke("models", "--profile", "slow")
    assert (result.returncode, result.stdout) == (3, b"")
    assert "--max-time 0.3 s" in one_line_error(result)


def test_models_endless_body_is_cut_at_the_limit(server: StandIn) -> None:
    # 64 MiB of an unfinished list, chunked with no end in sight: read up to 8 MiB, then refused
    server.push(Script([b'{"data": [', Repeat(b" " * 65536, 1024)], framing="chunked"))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url)
    assert (result.returncode, result.stdout) == (5, b"")
    assert f"a model list larger than {8 * 1024 * 1024} bytes" in one_line_error(result)


@pytest.mark.parametrize(("spare", "status"), [(0, 0), (-1, 5)])
def test_models_body_limit_is_exact(server: StandIn, monkeypatch: pytest.MonkeyPatch, spare: int, status: int) -> None:
    from koala_cli.providers import openai

    monkeypatch.setattr(openai, "MAX_MODEL_LIST_BYTES", len(MODEL_LIST) + spare)
    server.push(Script([MODEL_LIST[:10], MODEL_LIST[10:]], framing="chunked"))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url)
    assert (result.returncode, result.stdout) == (status, b"tiny\nbig\n" if status == 0 else b"")
    if status:
        assert "model list larger than" in one_line_error(result)


def test_models_deeply_nested_body_is_a_protocol_error(server: StandIn) -> None:
    server.push(Script([b"[" * 100_000], headers={"Content-Type": "application/json"}))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url)
    assert (result.returncode, result.stdout) == (5, b"")
    assert "model list nested too deeply" in one_line_error(result)


def model_list(*ids: object) -> Script:
    body = json.dumps({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}).encode()
    return Script([body], headers={"Content-Type": "application/json"})


def test_models_empty_id_is_skipped_not_the_default(server: StandIn) -> None:
    # OpenAI servers have no default model (its name is ""): an empty id is no model, and never the default
    server.push(model_list("", "tiny", "  ", "big"), model_list("", "tiny", "  ", "big"))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"tiny\nbig\n", b"")
    result = invoke("models", "--json", "--provider", "openai", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert ndjson(result.stdout) == [{"id": n, "default": False, "provider": "openai"} for n in ("tiny", "big")]


def test_models_id_cannot_break_its_line(server: StandIn) -> None:
    ids = ("evil\r\nfake", HOSTILE, "ok")
    server.push(model_list(*ids), model_list(*ids))
    result = invoke("models", "--provider", "openai", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    lines = assert_inert(result.stdout).splitlines()
    assert lines[0] == "evil\\r\\nfake"  # one line, the controls shown escaped
    assert "".join(c for c in lines[1] if c in MARKERS) == MARKERS  # all of it, on one line
    assert lines[2:] == ["ok"]
    result = invoke("models", "--json", "--provider", "openai", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert [record["id"] for record in ndjson(result.stdout)] == list(ids)  # exact: JSON escapes them


def test_models_provider_unknown() -> None:
    result = invoke("models", "--provider", "nosuch")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "nosuch" in one_line_error(result)


def test_history_show(tmp_path: Path) -> None:
    records = [*HISTORY, {"role": "user", "content": "multi\nline", "extra": 1}]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    result = invoke("history", "show", str(path))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    positions = [text.index(m["content"]) for m in records]
    assert positions == sorted(positions)
    assert "── system" in text
    assert "── user (1)" in text
    assert "── assistant (2)" in text
    assert "── user (3)" in text
    assert "multi\nline" in text
    as_json = invoke("history", "show", "--json", str(path))
    assert as_json.returncode == 0
    assert ndjson(as_json.stdout) == records


def test_history_show_json_passes_lines_through(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes('{"role": "user", "content": "café 😀"}\n{"role": "assistant", "content": "\\u2028x"}\n'.encode())
    result = invoke("history", "show", "--json", str(path))
    assert result.returncode == 0
    assert ndjson(result.stdout) == [
        {"role": "user", "content": "café 😀"},
        {"role": "assistant", "content": "\u2028x"},
    ]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_history_show_malformed_and_missing(tmp_path: Path, json_flag: list[str]) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "a"}\n\n{"role": "assistant", "content": 5}\n')
    result = invoke("history", "show", *json_flag, str(path))
    assert result.returncode == 2
    assert result.stdout == b""
    assert f"{path}:3:" in one_line_error(result)
    missing = invoke("history", "show", *json_flag, str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert missing.stdout == b""
    assert "nope.jsonl" in one_line_error(missing)


def bash_complete(script: Path, *words: str) -> list[str]:
    """The candidates bash's `_koala` offers for the last word of ``koala WORDS``."""
    program = (
        f'source "{script}"; COMP_WORDS=(koala {" ".join(repr(w) for w in words)}); '
        f"COMP_CWORD={len(words)}; _koala; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program], capture_output=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion(tmp_path: Path) -> None:
    result = invoke("completion", "bash")
    assert result.returncode == 0
    script = tmp_path / "koala.bash"
    script.write_bytes(result.stdout)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=WAIT, check=False)
    assert check.returncode == 0, check.stderr
    assert bash_complete(script, "as") == ["ask"]
    assert bash_complete(script, "ask", "--js") == ["--json"]
    assert sorted(bash_complete(script, "ask", "-m", "gpt-4o", "--max-t")) == [
        "--max-time",
        "--max-tokens",
        "--max-turns",
    ]
    assert sorted(bash_complete(script, "")) == sorted(
        ["ask", "batch", "chat", "completion", "config", "history", "models", "roles", "--version", "--help"]
    )
    assert bash_complete(script, "history", "") == ["last", "show"]
    assert bash_complete(script, "history", "show", "--j") == ["--json"]
    assert bash_complete(script, "batch", "--unor") == ["--unordered"]
    assert bash_complete(script, "completion", "z") == ["zsh"]
    (tmp_path / "notes.jsonl").write_text("")
    assert str(tmp_path / "notes.jsonl") in bash_complete(script, "ask", "-H", str(tmp_path / "no"))


def test_zsh_and_fish_completion() -> None:
    zsh = invoke("completion", "zsh")
    assert zsh.returncode == 0
    assert zsh.stdout.startswith(b"# zsh completion for koala")
    assert b"bashcompinit" in zsh.stdout
    assert b"complete -o filenames -F _koala koala" in zsh.stdout
    if shutil.which("zsh"):
        check = subprocess.run(["zsh", "-n"], input=zsh.stdout, capture_output=True, timeout=WAIT, check=False)
        assert check.returncode == 0, check.stderr
    fish = invoke("completion", "fish")
    assert fish.returncode == 0
    text = fish.stdout.decode()
    assert "complete -c koala" in text
    assert "-l json" in text
    assert "-l concurrency" in text
    if shutil.which("fish"):
        check = subprocess.run(["fish", "-n"], input=fish.stdout, capture_output=True, timeout=WAIT, check=False)
        assert check.returncode == 0, check.stderr


def test_completion_unknown_shell() -> None:
    result = invoke("completion", "tcsh")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "tcsh" in one_line_error(result)
