"""An input larger than the memory koala may use is one line and status 1, not a traceback."""

import resource
import subprocess
import threading
from pathlib import Path

from conftest import KOALA, WAIT

LIMIT = 600 * 1024 * 1024  # address space: room to start, none for gigabytes of prompt


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def test_an_endless_stdin_is_one_line_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [*KOALA, "ask", "--dry-run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limited,
    )
    assert proc.stdin is not None

    def feed() -> None:
        block = b"y\n" * (1 << 19)  # 1 MiB
        try:
            for _ in range(4 * LIMIT // len(block)):  # bounded: far past the limit
                proc.stdin.write(block)  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass  # koala gave up reading: what the test waits for

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        feeder.join(WAIT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]
    assert proc.returncode == 1
    assert out == b""
    assert err == b"koala: error: out of memory (an input too large for the memory koala may use?)\n"


def test_a_history_too_large_for_memory_is_one_line(tmp_path: Path) -> None:
    history = tmp_path / "huge.jsonl"
    with history.open("wb") as file:  # sparse: 2 GiB of NULs without the disk space
        file.truncate(2 << 30)
    result = subprocess.run(
        [*KOALA, "history", "show", str(history)], capture_output=True, timeout=WAIT, preexec_fn=_limited, check=False
    )
    assert result.returncode == 1
    assert result.stderr == b"koala: error: out of memory (an input too large for the memory koala may use?)\n"
