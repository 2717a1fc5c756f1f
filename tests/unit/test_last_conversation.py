"""The last conversation's store (koala_cli.last): paths, modes, atomic replacement."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from koala_cli.errors import UsageError
from koala_cli.history import load_history
from koala_cli.last import last_conversation, remember, require_last, save_exchange, state_dir


def test_state_dir() -> None:
    assert state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/koala")
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/state/koala")
    assert state_dir({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == Path("/h/.local/state/koala")


def test_none_yet(tmp_path: Path) -> None:
    assert last_conversation(tmp_path / "koala") is None
    with pytest.raises(UsageError, match="no last conversation to continue"):
        require_last(tmp_path / "koala")


def test_save_and_remember(tmp_path: Path) -> None:
    state = tmp_path / "state" / "koala"
    path = save_exchange(state, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert path == state / "last.jsonl"
    assert require_last(state) == path
    assert load_history(path) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "last").stat().st_mode) == 0o600
    assert sorted(os.listdir(state)) == ["last", "last.jsonl"]  # no temporary left


def test_remember_a_history_file_by_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("chat.jsonl").write_text("")
    remember(tmp_path / "koala", Path("chat.jsonl"))
    assert last_conversation(tmp_path / "koala") == tmp_path / "chat.jsonl"


def test_a_vanished_conversation(tmp_path: Path) -> None:
    remember(tmp_path / "koala", tmp_path / "gone.jsonl")
    with pytest.raises(UsageError, match="no longer exists"):
        require_last(tmp_path / "koala")


def test_unwritable_state_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot keep the last conversation"):
        save_exchange(tmp_path / "file" / "koala", [{"role": "user", "content": "x"}])


def test_concurrent_saves_never_mix(tmp_path: Path) -> None:
    """Each save replaces the file whole: whatever wins, the file is one exchange."""
    state = tmp_path / "koala"
    errors: list[BaseException] = []

    def save(n: int) -> None:
        try:
            for _ in range(20):
                save_exchange(state, [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    messages = load_history(state / "last.jsonl")
    assert len(messages) == 2 and messages[0]["content"][1:] == messages[1]["content"][1:]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_pointer_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "koala"
    state.mkdir()
    if kind == "fifo":
        os.mkfifo(state / "last")  # opened for reading with no writer, it would block for ever
    else:
        (state / "last").mkdir()
    done: list[BaseException | Path | None] = []
    reader = threading.Thread(target=lambda: done.append(_catch(lambda: last_conversation(state))), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the thread so that the test run can end
        os.close(os.open(state / "last", os.O_WRONLY | os.O_NONBLOCK)) if kind == "fifo" else None
        reader.join(10)
        pytest.fail("reading the pointer blocked")
    assert isinstance(done[0], UsageError)
    assert str(done[0]) == f"{state / 'last'}: not a regular file"


def _catch(read: object) -> BaseException | Path | None:
    try:
        return read()  # type: ignore[operator, no-any-return]
    except BaseException as exc:
        return exc
