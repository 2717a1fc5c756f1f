"""Pure helpers of issue 11: sampling options, prompt files, roles, the request log."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from koala_cli.errors import UsageError
from koala_cli.prompt import compose, fenced, read_text_file
from koala_cli.requestlog import append_record, check_log, host_of, log_record
from koala_cli.roles import list_roles, read_role
from koala_cli.sampling import build_options, parse_assignment, refuse_options

# -- sampling options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("top_k=40", ("top_k", 40)),
        ("x=0.5", ("x", 0.5)),
        ("flag=true", ("flag", True)),
        ('logit_bias={"50256": -100}', ("logit_bias", {"50256": -100})),
        ("name=plain text", ("name", "plain text")),
        ("empty=", ("empty", "")),
        ("a=b=c", ("a", "b=c")),
        ("n=NaN", ("n", "NaN")),
    ],
)
def test_assignments(text: str, expected: tuple[str, object]) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("novalue", "-o takes KEY=VALUE"),
        ("=1", "-o takes KEY=VALUE"),
        ("model=x", "use -m/--model"),
        ("stream=false", "stream"),
    ],
)
def test_bad_assignments(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_assignment(text)


def test_flags_win_over_o_over_config() -> None:
    options = build_options(
        base={"temperature": 1, "top_k": 5},
        assignments=["temperature=0.3", "top_k=6"],
        temperature=0.0,
        top_p=0.9,
        max_tokens=100,
        seed=7,
        stop=["\n\n", "END"],
    )
    assert options == {
        "temperature": 0.0,
        "top_k": 6,
        "top_p": 0.9,
        "max_tokens": 100,
        "seed": 7,
        "stop": ["\n\n", "END"],
    }
    assert build_options() == {}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"temperature": float("nan")}, "--temperature must be a number of 0 or more"),
        ({"temperature": -1.0}, "--temperature"),
        ({"top_p": float("inf")}, "--top-p"),
        ({"max_tokens": 0}, "--max-tokens must be 1 or more"),
    ],
)
def test_bad_values(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        build_options(**kwargs)  # type: ignore[arg-type]


def test_koala_provider_refuses_naming_the_option() -> None:
    refuse_options({}, "koala")
    with pytest.raises(UsageError, match=r"^--temperature: the koala provider takes no sampling options"):
        refuse_options({"temperature": 0}, "koala")
    with pytest.raises(UsageError, match=r"^-o top_k: "):
        refuse_options({"top_k": 1}, "koala")
    with pytest.raises(UsageError, match=r"^\[profiles.x\] options.top_k: "):
        refuse_options({"top_k": 1}, "koala", {"top_k": "[profiles.x] options.top_k"})


# -- prompt files --------------------------------------------------------------------------


def test_fenced_block_headed_by_its_path() -> None:
    assert fenced("notes.md", "a\nb") == "notes.md\n```\na\nb\n```"
    assert fenced("x", "a\n") == "x\n```\na\n```"
    assert fenced("x", "") == "x\n```\n```"


def test_a_longer_fence_around_fences() -> None:
    block = fenced("README.md", "text\n```sh\nls\n```\n  ````\n")
    assert block.startswith("README.md\n`````\n") and block.endswith("\n`````")


def test_order_stdin_files_words() -> None:
    assert compose("IN", [("a", "A"), ("b", "B")], "words") == "IN\n\na\n```\nA\n```\n\nb\n```\nB\n```\n\nwords"
    assert compose(None, [("a", "A")], "") == "a\n```\nA\n```"
    assert compose(None, [], "w") == "w"


def test_files_must_be_utf8() -> None:
    assert read_text_file("\ufeffé".encode(), "f") == "é"
    with pytest.raises(UsageError, match=r"^f:2: not valid UTF-8 \(byte 2\)"):
        read_text_file(b"a\n\xff", "f")


# -- roles -----------------------------------------------------------------------------------


def test_roles(tmp_path: Path) -> None:
    folder = tmp_path / "roles"
    assert list_roles(folder) == []
    folder.mkdir()
    (folder / "reviewer.md").write_text("# Reviewer\nBe terse.\n")
    (folder / "shell.md").write_text("Answer with one command.")
    (folder / "notes.txt").write_text("not a role")
    (folder / ".hidden.md").write_text("x")
    assert list_roles(folder) == ["reviewer", "shell"]
    assert read_role(folder, "reviewer") == "# Reviewer\nBe terse."


@pytest.mark.parametrize(
    ("name", "words"), [("nope", r"unknown role 'nope' \(known: a\)"), ("../x", "bad role name"), ("", "bad role name")]
)
def test_bad_roles(tmp_path: Path, name: str, words: str) -> None:
    (tmp_path / "a.md").write_text("A")
    with pytest.raises(UsageError, match=words):
        read_role(tmp_path, name)


def test_empty_or_binary_role(tmp_path: Path) -> None:
    (tmp_path / "e.md").write_text("  \n")
    (tmp_path / "b.md").write_bytes(b"\xff")
    with pytest.raises(UsageError, match="the role is empty"):
        read_role(tmp_path, "e")
    with pytest.raises(UsageError, match="not valid UTF-8"):
        read_role(tmp_path, "b")


# -- the request log ----------------------------------------------------------------------------


def test_record_shape() -> None:
    record = log_record(
        time=0.0,
        command="ask",
        profile="local",
        provider="openai",
        model="m",
        base_url="http://u:p@127.0.0.1:8/x",
        chars_in=3,
        chars_out=5,
        usage={"total_tokens": 9},
        elapsed_s=0.8123,
        exit_status=0,
    )
    assert record == {
        "time": "1970-01-01T00:00:00.000Z",
        "command": "ask",
        "profile": "local",
        "provider": "openai",
        "model": "m",
        "host": "127.0.0.1:8",
        "chars_in": 3,
        "chars_out": 5,
        "usage": {"total_tokens": 9},
        "ms": 812.3,
        "exit_status": 0,
    }
    assert "prompt" in log_record(
        time=0,
        command="ask",
        profile=None,
        provider="koala",
        model="m",
        base_url="https://koala.sh",
        chars_in=1,
        chars_out=0,
        usage=None,
        elapsed_s=0,
        exit_status=4,
        prompt="p",
    )


def test_host_of() -> None:
    assert host_of("https://koala.sh") == "koala.sh"
    assert host_of("http://[::1]:8080/v1") == "[::1]:8080"
    assert host_of("http://x:99999") == ""


def test_append_is_0600_and_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    check_log(path)
    append_record(path, {"a": 1, "text": "é"})
    append_record(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1, "text": "é"}, {"a": 2}]


def test_bad_log_paths(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        check_log(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        check_log(tmp_path / "no" / "log")
