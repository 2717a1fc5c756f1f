"""Docs cannot drift: every option of --help is in the man page and the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_koala

ROOT = Path(__file__).resolve().parent.parent
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]+)")


def help_options() -> set[str]:
    text = run_koala("--help").stdout.decode() + run_koala("ask", "--help").stdout.decode()
    return set(OPTION.findall(text))


def test_help_lists_the_options() -> None:
    assert {"--json", "--history", "--model", "--base-url", "--version", "--help"} <= help_options()


@pytest.mark.parametrize("doc", ["README.md", "man/koala.1"])
def test_every_option_is_documented(doc: str) -> None:
    text = (ROOT / doc).read_text().replace("\\-", "-")
    missing = sorted(option for option in help_options() if option not in text)
    assert not missing, f"{doc} lacks {missing}"


@pytest.mark.parametrize("doc", ["README.md", "man/koala.1"])
def test_every_exit_status_is_documented(doc: str) -> None:
    text = (ROOT / doc).read_text()
    for status in ("0", "1", "2", "3", "4", "5", "130", "143", "141"):
        assert re.search(rf"\b{status}\b", text), status


def test_man_page_sections() -> None:
    text = (ROOT / "man/koala.1").read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES"):
        assert f".SH {section}" in text
    assert ".SH SEE ALSO" in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", str(ROOT / "man/koala.1")], capture_output=True, check=False, timeout=30
    )
    assert result.returncode == 0
    assert result.stderr == b""
    assert b"koala" in result.stdout
