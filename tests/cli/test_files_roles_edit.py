"""Issue 11: -f/--file, --system-file, -r/--role and `koala roles`, -e/--edit and chat's /edit."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path

import pytest
from daily_helpers import Dirs, Koala
from standin import Script, StandIn, sse


def dry(koala: Koala, *args: str, stdin: bytes = b"") -> dict[str, object]:
    ran = koala("ask", "--provider", "openai", "-m", "m", "--dry-run", "--json", *args, stdin=stdin)
    assert ran.status == 0, ran.err
    body: dict[str, object] = json.loads(ran.out)["body"]
    return body


def messages(body: dict[str, object]) -> list[dict[str, str]]:
    return body["messages"]  # type: ignore[return-value]


# -- -f/--file ----------------------------------------------------------------------------------


def test_files_come_after_stdin_and_before_the_words(koala: Koala, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n```py\nx = 1\n```\n")
    (tmp_path / "b.txt").write_text("bee")
    body = dry(koala, "-f", str(tmp_path / "a.md"), "--file", str(tmp_path / "b.txt"), "summarise", stdin=b"IN\n")
    assert messages(body)[-1]["content"] == (
        f"IN\n\n{tmp_path / 'a.md'}\n````\n# A\n```py\nx = 1\n```\n````\n\n"
        f"{tmp_path / 'b.txt'}\n```\nbee\n```\n\nsummarise"
    )


def test_a_file_alone_is_a_prompt_and_dash_is_stdin(koala: Koala, tmp_path: Path) -> None:
    (tmp_path / "n.md").write_text("note")
    assert messages(dry(koala, "-f", str(tmp_path / "n.md")))[-1]["content"] == f"{tmp_path / 'n.md'}\n```\nnote\n```"
    body = dry(koala, "-f", "-", "explain", stdin=b"piped\n")
    assert messages(body)[-1]["content"] == "(stdin)\n```\npiped\n```\n\nexplain"


def test_files_are_never_truncated(koala: Koala, tmp_path: Path) -> None:
    big = "line of text\n" * 100_000
    (tmp_path / "big.txt").write_text(big)
    assert big in messages(dry(koala, "-f", str(tmp_path / "big.txt")))[-1]["content"]


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("missing", "-f {path}: No such file or directory"),
        ("folder", "-f {path}: Is a directory"),
        ("binary", "{path}:1: not valid UTF-8 (byte 1)"),
    ],
)
def test_bad_files_are_exit_2(koala: Koala, server: StandIn, tmp_path: Path, setup: str, words: str) -> None:
    path = tmp_path / "f"
    if setup == "folder":
        path.mkdir()
    elif setup == "binary":
        path.write_bytes(b"a\xff")
    ran = koala("ask", "--base-url", server.base_url, "-f", str(path), "hi")
    assert ran.status == 2
    assert words.format(path=path) in ran.error_line()
    assert server.requests == []


@pytest.mark.parametrize("option", ["-f", "--system-file"])
def test_a_device_is_never_read_as_a_file(koala: Koala, server: StandIn, option: str) -> None:
    # /dev/zero would be read for ever (and fill the memory); a terminal would wait for typing
    ran = koala("ask", "--base-url", server.base_url, option, "/dev/zero", "hi")
    assert ran.status == 2
    assert ran.error_line() == f"{option} /dev/zero: not a regular file or a pipe"
    assert server.requests == []


@pytest.mark.parametrize("option", ["-f", "--system-file"])
def test_the_null_device_reads_as_an_empty_file(koala: Koala, option: str) -> None:
    ran = koala("ask", "--dry-run", "--json", option, os.devnull, "hi")  # `> /dev/null`'s reading twin
    assert ran.status == 0, ran.error_line()
    assert json.loads(ran.out)["body"]["input"].endswith("hi")


def test_a_pipe_is_read_as_a_file(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    reader, writer = os.pipe()  # what `-f <(command)` names
    os.write(writer, b"piped text")
    os.close(writer)
    try:
        ran = koala("ask", "--dry-run", "--json", "-f", f"/dev/fd/{reader}", "hi")
    finally:
        os.close(reader)
    assert ran.status == 0, ran.error_line()
    assert "piped text" in json.loads(ran.out)["body"]["input"]


def test_the_file_reaches_the_server(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("remember the milk")
    server.push(Script([sse("ok")]))
    assert koala("ask", "--base-url", server.base_url, "-f", str(tmp_path / "notes.md"), "summarise").status == 0
    assert "remember the milk" in server.requests[0].json()["input"]


# -- --system-file, -r/--role, koala roles -------------------------------------------------------


def test_role_then_system_files_then_s(dirs: Dirs, koala: Koala, tmp_path: Path) -> None:
    (dirs.config / "roles").mkdir(parents=True)
    (dirs.config / "roles" / "reviewer.md").write_text("You review code.\n")
    (tmp_path / "extra.md").write_text("Be terse.\n")
    body = dry(koala, "-r", "reviewer", "--system-file", str(tmp_path / "extra.md"), "-s", "In French.", "hi")
    assert messages(body)[0] == {"role": "system", "content": "You review code.\n\nBe terse.\n\nIn French."}
    assert koala("roles").out == "reviewer\n"


def test_roles_follow_koala_config(koala: Koala, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere" / "roles").mkdir(parents=True)
    (tmp_path / "elsewhere" / "roles" / "x.md").write_text("X")
    monkeypatch.setenv("KOALA_CONFIG", str(tmp_path / "elsewhere" / "config.toml"))
    assert koala("roles").out == "x\n"


def test_role_in_chat_and_batch(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    (dirs.config / "roles").mkdir(parents=True)
    (dirs.config / "roles" / "pirate.md").write_text("Talk like a pirate.")
    server.push(Script([sse("arr")]), Script([sse("arr")]))
    assert koala("chat", "--base-url", server.base_url, "-r", "pirate", stdin=b"hi\n").status == 0
    assert server.requests[0].json()["input"] == "hi Talk like a pirate."
    assert koala("batch", "--base-url", server.base_url, "--lines", "-r", "pirate", stdin=b"yo\n").status == 0
    assert server.requests[1].json()["input"] == "yo Talk like a pirate."


def test_a_role_that_is_a_device_is_never_read(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    """A role linked to /dev/zero would be read until memory ran out, as -f would."""
    (dirs.config / "roles").mkdir(parents=True)
    (dirs.config / "roles" / "zero.md").symlink_to("/dev/zero")
    ran = koala("ask", "--base-url", server.base_url, "-r", "zero", "hi")
    assert ran.status == 2
    assert ran.error_line() == f"{dirs.config / 'roles' / 'zero.md'}: not a regular file or a pipe"
    assert server.requests == []
    assert koala("roles").out == ""  # nor listed


@pytest.mark.parametrize("command", ["ask", "chat", "batch"])
def test_bad_roles_and_system_files_are_exit_2(dirs: Dirs, koala: Koala, server: StandIn, command: str) -> None:
    (dirs.config / "roles").mkdir(parents=True)
    (dirs.config / "roles" / "known.md").write_text("K")
    extra = ["hi"] if command == "ask" else []
    ran = koala(command, "--base-url", server.base_url, "-r", "unknown", *extra, stdin=b"hi\n")
    assert ran.status == 2 and "unknown role 'unknown' (known: known)" in ran.error_line()
    ran = koala(command, "--base-url", server.base_url, "--system-file", "/nonexistent/x", *extra, stdin=b"hi\n")
    assert ran.status == 2 and "--system-file /nonexistent/x: No such file" in ran.error_line()
    assert server.requests == []


# -- -e/--edit ---------------------------------------------------------------------------------------

EDITOR = """\
import os, stat, sys
path = sys.argv[-1]
with open(os.environ["EDITOR_LOG"], "w") as log:
    log.write(oct(stat.S_IMODE(os.stat(path).st_mode)) + "\\n" + open(path).read())
mode = os.environ.get("EDITOR_MODE", "append")
if mode == "append":
    open(path, "a").write("\\nplus an edit")
elif mode == "empty":
    open(path, "w").write("  \\n")
elif mode == "fail":
    sys.exit(3)
elif mode == "remove":
    os.unlink(path)
elif mode == "killed":
    os.kill(os.getpid(), 9)
"""


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    log = tmp_path / "editor.log"
    monkeypatch.setenv("EDITOR", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    monkeypatch.setenv("EDITOR_LOG", str(log))
    return log


@pytest.mark.parametrize("misuse", [["-c", "-H", "x.jsonl"], ["-c"]], ids=["with -H", "no last conversation"])
def test_continue_is_refused_before_the_editor_opens(
    koala: Koala, server: StandIn, editor: Path, misuse: list[str]
) -> None:
    ran = koala("ask", "--base-url", server.base_url, *misuse, "-e", "draft")
    assert ran.status == 2
    assert not editor.exists()  # nothing typed in it is lost
    assert server.requests == []


def test_edit_the_composed_prompt(koala: Koala, server: StandIn, editor: Path) -> None:
    server.push(Script([sse("ok")]))
    ran = koala("ask", "--base-url", server.base_url, "-e", "draft", stdin=b"piped\n")
    assert ran.status == 0, ran.err
    mode, _, seen = editor.read_text().partition("\n")
    assert mode == "0o600"
    assert seen == "piped\n\ndraft"
    assert server.requests[0].json()["input"] == "piped\n\ndraft\nplus an edit"


def test_visual_wins_over_editor(koala: Koala, editor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISUAL", os.environ["EDITOR"])
    monkeypatch.setenv("EDITOR", "/nonexistent/editor")
    assert messages(dry(koala, "-e", "x"))[-1]["content"] == "x\nplus an edit"


def test_edit_from_nothing(koala: Koala, editor: Path) -> None:
    assert messages(dry(koala, "-e"))[-1]["content"] == "plus an edit"


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("empty", "the edited prompt is empty; nothing was sent"),
        ("fail", "failed (exit status 3)"),
        ("killed", "was killed by SIGKILL; nothing was sent"),
        ("remove", "cannot read what the editor left: No such file or directory; nothing was sent"),
    ],
)
def test_an_empty_edit_or_a_failed_editor_sends_nothing(
    koala: Koala, server: StandIn, editor: Path, monkeypatch: pytest.MonkeyPatch, mode: str, words: str
) -> None:
    monkeypatch.setenv("EDITOR_MODE", mode)
    ran = koala("ask", "--base-url", server.base_url, "-e", "x")
    assert ran.status == 2 and words in ran.error_line()
    assert server.requests == []


def test_no_editor_or_a_missing_one(koala: Koala, server: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = koala("ask", "--base-url", server.base_url, "-e", "x")
    assert ran.status == 2 and "set $VISUAL or $EDITOR" in ran.error_line()
    monkeypatch.setenv("EDITOR", "/nonexistent/editor --flag")
    ran = koala("ask", "--base-url", server.base_url, "-e", "x")
    assert ran.status == 2 and "cannot run the editor '/nonexistent/editor'" in ran.error_line()
    assert server.requests == []


def test_the_temporary_file_is_removed(
    koala: Koala, editor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    dry(koala, "-e", "x")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode)  # the folder itself is untouched


def test_chat_slash_edit(koala: Koala, server: StandIn, editor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.push(Script([sse("ok")]))
    ran = koala("chat", "--base-url", server.base_url, stdin=b"/edit start\n")
    assert ran.status == 0, ran.err
    assert server.requests[0].json()["input"] == "start\nplus an edit"
    monkeypatch.setenv("EDITOR_MODE", "empty")
    ran = koala("chat", "--base-url", server.base_url, stdin=b"/edit\n")
    assert ran.status == 2 and "the edited prompt is empty" in ran.err
    assert len(server.requests) == 1
