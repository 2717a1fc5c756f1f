"""Input nested deeper than Python's recursion limit -- a batch line, a history line, an
event from the server, the config file, an -o value -- is bad input, said in one line,
never a RecursionError's traceback (jq: "Exceeds depth limit").  And values JSON has no
words for (NaN, infinity, a TOML date) never reach a request body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from koala_cli.config import load_config
from koala_cli.errors import HistoryError, ProtocolError, UsageError
from koala_cli.events import EventReader
from koala_cli.history import load_history
from koala_cli.jobs import BadJob, Job, JobParser
from koala_cli.sampling import parse_assignment

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_deep_batch_line_is_a_bad_line_and_the_others_run() -> None:
    parser = JobParser("in.jsonl")
    first = parser.parse(1, b'{"id": "a", "prompt": "hi"}')
    deep = parser.parse(2, ('{"id": "b", "prompt": "hi", "x": ' + DEEP + "}").encode())
    last = parser.parse(3, b'{"id": "c", "prompt": "hi"}')
    assert isinstance(first, Job) and isinstance(last, Job)
    assert isinstance(deep, BadJob)
    assert deep.message.startswith("in.jsonl:2: not valid JSON (nested too deeply")


def test_a_deep_history_line_is_file_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"role": "user", "content": "x", "extra": ' + DEEP + "}\n")
    with pytest.raises(HistoryError, match=r"h\.jsonl:1: not valid JSON \(nested too deeply"):
        load_history(path)


@pytest.mark.parametrize("event", [DEEP, '{"choices": ' + DEEP + "}"])
def test_a_deep_event_is_a_protocol_error(event: str) -> None:
    chunks, _, error = EventReader().read([event])
    assert chunks == []
    assert isinstance(error, ProtocolError), error


def test_a_deep_config_file_is_file_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[default]\nx = " + "[" * 5_000 + "]" * 5_000 + "\n")
    with pytest.raises(UsageError, match=r"config\.toml: nested too deeply"):
        load_config(path)


@pytest.mark.parametrize("raw", [DEEP, "[NaN]", '{"a": Infinity}', "-Infinity"])
def test_an_option_value_that_is_not_plain_json_is_text(raw: str) -> None:
    assert parse_assignment(f"x={raw}") == ("x", raw)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nan", "options.temperature must be JSON (no NaN or infinity)"),
        ("inf", "options.temperature must be JSON (no NaN or infinity)"),
        ("[1.0, -inf]", "options.temperature must be JSON (no NaN or infinity)"),
        ("1979-05-27", "options.temperature must be JSON (no dates or times)"),
        ("{ at = 07:32:00 }", "options.temperature must be JSON (no dates or times)"),
    ],
)
def test_config_options_must_be_json(tmp_path: Path, value: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[profiles.x]\nprovider = "openai"\noptions = {{ temperature = {value} }}\n')
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:3: {words}"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_config_file_that_is_a_device_is_refused() -> None:
    with pytest.raises(UsageError, match="/dev/zero: not a regular file or a pipe"):
        load_config(Path("/dev/zero"))


@pytest.mark.parametrize(("status", "words"), [(200, "answered JSON nested too deeply"), (500, "HTTP 500")])
def test_a_deep_json_answer_is_one_protocol_or_service_error(status: int, words: str) -> None:
    import anyio
    from standin import Script, StandIn

    from koala_cli import Koala, KoalaError

    server = StandIn().start()
    try:
        server.push(Script([DEEP.encode()], status=status, headers={"Content-Type": "application/json"}))

        async def ask() -> str:
            hi: list[Any] = [{"role": "user", "content": "hi"}]
            return await Koala.create_async("", hi, base_url=server.base_url, retries=0)

        with pytest.raises(KoalaError, match=words):
            anyio.run(ask)
    finally:
        server.stop()
