"""Start-up: a fresh interpreter loads only what the command needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import WAIT


def _modules_after(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=WAIT)
    return set(result.stdout.decode().split())


def test_library_import_is_light() -> None:
    loaded = _modules_after("import sys, koala_cli; print(*sys.modules)")
    assert not {"typer", "httpx", "anyio"} & loaded


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["ask", "--help"]])
def test_help_and_version_import_nothing_a_request_needs(args: list[str]) -> None:
    code = (
        "import sys\nfrom koala_cli.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\nprint(*sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, timeout=WAIT)
    loaded = set(result.stderr.decode().split())
    assert not {"httpx", "anyio", "pydantic", "rich", "json"} & loaded
    if args == ["--version"]:
        assert "typer" not in loaded
