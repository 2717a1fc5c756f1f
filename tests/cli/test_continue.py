"""Issue 11: the last conversation -- `koala ask -c`, `koala chat -c`, `koala history last`,
`koala history show` without FILE, KOALA_NO_LAST and remember_last."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from daily_helpers import Dirs, Koala
from standin import Script, StandIn, sse


def ask(koala: Koala, server: StandIn, *args: str, stdin: bytes = b""):  # type: ignore[no-untyped-def]
    return koala("ask", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]  # not splitlines: U+2028


def test_ask_then_continue(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([sse("Hello ", "Ann")]), Script([sse("Your name is Ann")]))
    assert ask(koala, server, "my name is Ann").status == 0
    last = dirs.state / "last.jsonl"
    assert lines(last) == [{"role": "user", "content": "my name is Ann"}, {"role": "assistant", "content": "Hello Ann"}]
    assert stat.S_IMODE(dirs.state.stat().st_mode) == 0o700
    assert stat.S_IMODE(last.stat().st_mode) == 0o600
    ran = ask(koala, server, "-c", "what is my name?")
    assert (ran.status, ran.out) == (0, "Your name is Ann\n"), ran.err
    sent = server.requests[1].json()
    assert sent["inputHistory"] == ["my name is Ann"] and sent["outputHistory"] == ["Hello Ann"]
    assert len(lines(last)) == 4
    assert koala("history", "last").out == f"{last}\n"
    shown = koala("history", "show")
    assert shown.status == 0 and "what is my name?" in shown.out and "Your name is Ann" in shown.out


def test_a_new_plain_ask_starts_a_new_last_conversation(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([sse("one")]), Script([sse("two")]))
    assert ask(koala, server, "first").status == 0
    assert ask(koala, server, "second").status == 0
    assert lines(dirs.state / "last.jsonl") == [
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "two"},
    ]


def test_special_text_is_kept_exactly(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    text = 'quote " backslash \\ tab \t newline \n é 😀 \u2028'
    server.push(Script([sse(text[:9], text[9:])]))
    assert ask(koala, server, "x").status == 0
    assert lines(dirs.state / "last.jsonl")[1]["content"] == text


def test_the_last_conversation_and_the_config_path_print_as_the_system_has_them(
    dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that is not UTF-8 comes out as its bytes, so that "$(koala history last)" and
    "$(koala config path)" name the file (not the text "\\udcff")."""
    name = os.fsdecode(b"chat-\xff.jsonl")
    server.push(Script([sse("a")]))
    assert ask(koala, server, "-H", str(tmp_path / name), "q1").status == 0
    assert koala("history", "last").stdout == os.fsencode(tmp_path / name) + b"\n"
    monkeypatch.setenv("KOALA_CONFIG", str(tmp_path / os.fsdecode(b"c\xff.toml")))
    assert koala("config", "path").stdout == os.fsencode(tmp_path) + b"/c\xff.toml\n"


def test_a_history_file_becomes_the_last_conversation(
    dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server.push(Script([sse("a")]), Script([sse("b")]))
    assert ask(koala, server, "-H", "chat.jsonl", "q1").status == 0
    assert koala("history", "last").out == f"{tmp_path / 'chat.jsonl'}\n"
    assert not (dirs.state / "last.jsonl").exists()
    assert ask(koala, server, "-c", "q2").status == 0
    assert len(lines(tmp_path / "chat.jsonl")) == 4


def test_failed_ask_keeps_nothing(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([sse("ok")]), Script([b"nope"], status=500, reason="Internal Server Error"))
    assert ask(koala, server, "good").status == 0
    assert ask(koala, server, "bad").status == 4
    assert lines(dirs.state / "last.jsonl")[0]["content"] == "good"
    assert sorted(os.listdir(dirs.state)) == ["last", "last.jsonl"]  # no temporary left behind


def test_bad_uses_of_continue(dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path) -> None:
    ran = ask(koala, server, "-c", "hi")
    assert ran.status == 2 and "no last conversation to continue" in ran.error_line()
    assert koala("history", "last").status == 2
    assert "no last conversation" in koala("history", "show").error_line()
    ran = ask(koala, server, "-c", "-H", str(tmp_path / "x.jsonl"), "hi")
    assert ran.status == 2 and "cannot be used with -H" in ran.error_line()
    assert koala("chat", "-c", stdin=b"hi\n").status == 2
    assert server.requests == []


def test_a_vanished_last_conversation(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([sse("ok")]))
    assert ask(koala, server, "x").status == 0
    (dirs.state / "last.jsonl").unlink()
    ran = ask(koala, server, "-c", "y")
    assert ran.status == 2 and "no longer exists" in ran.error_line()


@pytest.mark.parametrize("how", ["env", "config"])
def test_opting_out_writes_nothing_anywhere(
    dirs: Dirs, koala: Koala, server: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("KOALA_NO_LAST", "1")
    else:
        dirs.write_config("[default]\nremember_last = false\n")
    server.push(Script([sse("ok")]), Script([sse("ok")]))
    assert ask(koala, server, "x").status == 0
    assert ask(koala, server, "-H", str(tmp_path / "h.jsonl"), "y").status == 0
    assert not dirs.state.exists()


def test_chat_continue_and_chat_history_becomes_last(dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path) -> None:
    server.push(Script([sse("first")]), Script([sse("second")]), Script([sse("third")]))
    assert ask(koala, server, "q1").status == 0
    ran = koala("chat", "--base-url", server.base_url, "-c", stdin=b"q2\n")
    assert ran.status == 0, ran.err
    assert server.requests[1].json()["inputHistory"] == ["q1"]
    assert len(lines(dirs.state / "last.jsonl")) == 4
    history = tmp_path / "c.jsonl"
    assert koala("chat", "--base-url", server.base_url, "-H", str(history), stdin=b"q3\n").status == 0
    assert koala("history", "last").out == f"{history}\n"


def test_dry_run_continue_shows_the_conversation_and_keeps_nothing(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([sse("A1")]))
    assert ask(koala, server, "Q1").status == 0
    before = (dirs.state / "last.jsonl").read_bytes()
    ran = ask(koala, server, "-c", "--dry-run", "--json", "Q2")
    assert json.loads(ran.out)["body"]["inputHistory"] == ["Q1"]
    assert (dirs.state / "last.jsonl").read_bytes() == before


def test_an_unwritable_state_folder_is_only_a_notice(
    dirs: Dirs, koala: Koala, server: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "blocker"))
    server.push(Script([sse("fine")]))
    ran = ask(koala, server, "x")
    assert (ran.status, ran.out) == (0, "fine\n")
    assert ran.err.startswith("koala: cannot keep the last conversation")
