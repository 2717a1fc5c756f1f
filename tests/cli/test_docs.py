"""Docs cannot drift: every option of --help (run in process) is in the man page and the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import WAIT, invoke

ROOT = Path(__file__).resolve().parents[2]
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]+)")


COMMANDS = [
    [],
    ["ask"],
    ["chat"],
    ["batch"],
    ["models"],
    ["history", "show"],
    ["history", "last"],
    ["completion"],
    ["config", "show"],
    ["roles"],
]


def help_options() -> set[str]:
    text = "".join(invoke(*command, "--help").stdout.decode() for command in COMMANDS)
    return set(OPTION.findall(text))


def test_help_lists_the_options() -> None:
    options = help_options()
    assert {"--json", "--history", "--model", "--base-url", "--version", "--help", "--concurrency"} <= options


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.returncode == 0
    assert b"\x1b[" not in result.stdout
    assert result.stdout.startswith(b"Usage: koala")


@pytest.mark.parametrize("doc", ["README.md", "man/koala.1"])
def test_every_option_is_documented(doc: str) -> None:
    text = (ROOT / doc).read_text().replace("\\-", "-")
    missing = sorted(option for option in help_options() if option not in text)
    assert not missing, f"{doc} lacks {missing}"


@pytest.mark.parametrize("doc", ["README.md", "man/koala.1"])
def test_every_command_is_documented(doc: str) -> None:
    text = (ROOT / doc).read_text().replace("\\-", "-")
    for command in COMMANDS[1:]:
        assert "koala " + " ".join(command) in text, command


def test_every_exit_status_is_in_the_readme_table() -> None:
    text = (ROOT / "README.md").read_text()
    for status in ("0", "1", "2", "3", "4", "5", "130", "141"):
        assert re.search(rf"^\| {status} \|", text, re.MULTILINE), status
    assert "143" in text


def test_every_exit_status_is_in_the_man_page() -> None:
    text = (ROOT / "man/koala.1").read_text()
    section = text[text.index(".SH EXIT STATUS") : text.index(".SH EXAMPLES")]
    for status in ("0", "1", "2", "3", "4", "5", "130", "141"):
        assert f".B {status}\n" in section, status
    assert "143" in section


def test_man_page_sections() -> None:
    text = (ROOT / "man/koala.1").read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES"):
        assert f".SH {section}" in text
    assert ".SH SEE ALSO" in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", str(ROOT / "man/koala.1")], capture_output=True, check=False, timeout=WAIT
    )
    assert result.returncode == 0
    assert result.stderr == b""
    assert b"koala" in result.stdout


def test_public_api_is_pinned() -> None:
    import koala_cli

    assert koala_cli.__all__ == [
        "DEFAULT_MODEL",
        "PROVIDERS",
        "AsyncGeneratorProvider",
        "BlockedError",
        "HTTPStreamProvider",
        "HistoryError",
        "Koala",
        "KoalaError",
        "Message",
        "NetworkError",
        "OpenAI",
        "OutputError",
        "ProtocolError",
        "ProviderModelMixin",
        "RequestSpec",
        "Role",
        "ServiceError",
        "TimeoutError",
        "UsageError",
        "__version__",
        "build_payload",
    ]
    for name in koala_cli.__all__:
        assert getattr(koala_cli, name) is not None
