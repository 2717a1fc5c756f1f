"""The real `koala` process loads no library it does not use, whatever else is installed."""

from conftest import run_koala


def test_a_request_loads_neither_httpx_cli_nor_trio() -> None:
    # the test environment has click (uvicorn's) and trio installed: httpx and httpcore
    # would import them, and rich and pygments with them, in every koala process
    result = run_koala("ask", "--dry-run", "hi", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.decode().splitlines() if "|" in line}
    assert "httpx" in loaded  # the measurement sees what it should
    # (a blocked import is listed too, taking microseconds: what it would load is not)
    assert not {"click", "rich", "rich.console", "pygments", "trio._core"} & loaded
