"""What the tests share: a clean environment, the stand-in server, koala in process and as a
process, bounded pipe reads, the one-line-error check and a history to start from.

Where a test lives says how it runs koala:

- ``tests/unit/``    the library, in process;
- ``tests/cli/``     commands in process through :func:`invoke` (about 15 ms an ask);
- ``tests/process/`` the real ``koala`` command through :func:`run_koala` or :func:`popen_koala`,
  where the process is the point (pipes, signals, buffering, exit statuses, concurrency,
  terminals);
- ``tests/interop/`` the real ``koala`` command against servers written by others.

The last two folders are the ``subprocess`` tests: the folder is the mark, and
``pytest -m "not subprocess"``, the quick loop while editing, does not even import them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from keepalive import KeepAlive
from standin import WAIT, RoutedStandIn, StandIn

# pytest started with SIGINT ignored -- a background job of a script (`pytest &`, `(trap '' INT;
# pytest)`) -- would pass the ignored SIGINT on to every koala it starts, and koala deliberately
# leaves an ignored signal ignored, so the tests that interrupt it would fail.  Give the session
# Python's own disposition back: a child then starts with SIGINT at its default, as from a shell.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests check what the code does, not how fast: on a busy 2-core machine hypothesis's
# per-example deadline and its "input generation is slow" check fail tests that are right
# (speed lives in bench/).
settings.register_profile("koala", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("koala")

pytest_plugins = ["daily_helpers"]  # the `koala` (in process) and `dirs` fixtures of issue 11's tests


HERE = Path(__file__).parent
SUBPROCESS_FOLDERS = (HERE / "process", HERE / "interop")


def pytest_itemcollected(item: pytest.Item) -> None:
    if any(folder in item.path.parents for folder in SUBPROCESS_FOLDERS):  # subfolders too
        item.add_marker(pytest.mark.subprocess)


def quick_loop(config: pytest.Config) -> bool:
    """Exactly ``-m "not subprocess"``: the loop to run while editing."""
    return bool(config.option.markexpr == "not subprocess")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The quick loop does not collect the subprocess folders: every test in them would be
    deselected, after importing the modules and the servers they use."""
    if quick_loop(config) and collection_path in SUBPROCESS_FOLDERS:
        return True
    return None


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: unknown with -p no:xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`pytest -n auto` (pytest-xdist, as the README runs the suite): two workers a CPU.  Much
    of the suite's time is waiting -- for koala processes to start and end, for timeouts,
    locks and paced servers -- and a second worker a core fills it; every test is safe in
    parallel (ports from the OS, tmp_path only, no process-group signals).  The quick loop
    waits far less, and every worker collects the tests again (compiling them, where Python
    may not keep bytecode): one worker more than the CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpus + 1 if quick_loop(config) else 2 * cpus


# Run first when the tests run in parallel: what takes seconds of real time each (processes by
# the dozen, stops and resumes, signals repeated, timeouts that must pass), longest first, so
# that the many short tests fill the gaps and end the run.  Only the order changes; under -n0
# not even that.
_EARLY = (
    "tests/process/test_concurrency.py",
    "tests/process/test_batch_scale.py",
    "tests/process/test_stop_resume.py",
    "tests/process/test_hangs.py",
    "tests/unit/test_transport.py",
    "tests/process/",
    "tests/interop/",
    # the quick loop's longest after test_transport: a 400-example property, then timeouts
    # and Retry-After waits among many short tests
    "tests/unit/test_events_fast.py",
    "tests/cli/test_faults.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not a pytest-xdist worker: the usual order
        return

    def rank(item: pytest.Item) -> int:
        return next((n for n, start in enumerate(_EARLY) if item.nodeid.startswith(start)), len(_EARLY))

    items.sort(key=rank)  # stable: within a rank, the usual order


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """In parallel without a --dist of the caller's: each worker is handed two tests at a
    time, in the order above (xdist's `load` with --maxschedchunk 2), so a free worker
    always takes the longest test left -- not a block of 60 neighbours, which may all be
    slow ones."""
    numprocesses = getattr(config.option, "numprocesses", None)
    if numprocesses and config.option.dist == "no" and not config.option.distload:
        config.option.dist = "load"
        if config.option.maxschedchunk is None:
            config.option.maxschedchunk = 2


_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's koala settings, proxies or unbuffered stdio."""
    for name in list(os.environ):
        if name.startswith(("KOALA_", "OPENAI_")) or name.upper() in _PROXY_VARS or name == "PYTHONUNBUFFERED":
            monkeypatch.delenv(name, raising=False)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):  # config, last conversation
        monkeypatch.delenv(name, raising=False)
    # No NO_PROXY either: an explicit --proxy is skipped for the hosts it names, as curl does.
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(autouse=True)
def _fresh_koala_state() -> Iterator[None]:
    """Every test starts as a new `koala` process would, and leaves pytest's hooks as they
    were (an in-process run of koala's main() sets the excepthook and unraisablehook)."""
    _fresh_process_state()
    hooks = sys.excepthook, sys.unraisablehook
    yield
    sys.excepthook, sys.unraisablehook = hooks


@pytest.fixture
def server() -> Iterator[StandIn]:
    """The loopback stand-in for koala.sh (tests/standin.py), stopped after the test."""
    with StandIn() as stand_in:
        yield stand_in


@pytest.fixture
def routed() -> Iterator[RoutedStandIn]:
    """A stand-in that picks each answer by the prompt's first word, for concurrent clients."""
    with RoutedStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The private CA and certificates of tests/tlsstandin.py, made once a session (a worker)
    for every TLS test: each ``openssl`` run costs a few tens of milliseconds."""
    from tlsstandin import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_base_url() -> str:
    """A loopback URL nobody listens on."""
    return f"http://127.0.0.1:{closed_port()}"


# --- koala in process ----------------------------------------------------------------------


def invoke(
    *args: str, stdin: bytes | None = None, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run `koala ARGS` in this process, as the script would: ``koala_cli.cli.main`` with stdin,
    stdout and stderr in memory (Typer's ``CliRunner`` isolation: not terminals, stdin empty
    unless given), ``env`` laid over the environment (None removes a variable), the exit status
    taken from its ``SystemExit``.  Any other exception is a bug and fails the test."""
    from typer.testing import CliRunner

    from koala_cli.cli import main

    _fresh_process_state()
    hooks = sys.excepthook, sys.unraisablehook
    with CliRunner().isolation(input=stdin, env=env) as (out, err, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - main() always exits
            raise AssertionError("koala_cli.cli.main returned instead of exiting")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # main() sets the process's hooks for its own exit (a scrubbed traceback, quiet
            # unraisables); pytest's own must be back, or it would stop seeing unraisables
            sys.excepthook, sys.unraisablehook = hooks
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")  # as the interpreter reports a SystemExit("message")
            sys.stderr.flush()
            code = 1
        return subprocess.CompletedProcess(["koala", *args], code or 0, out.getvalue(), err.getvalue())


# transport.tls_context's keys for the trusted certificates no test chose: none set (certifi's
# bundle), or what the session was started with; loading them again for each run costs 17 ms.
_USUAL_TRUST = {("", ""), (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))}


def _fresh_process_state() -> None:
    """What a new `koala` process starts without, so one in-process run cannot help the next:
    no secret known to mask (a run that failed to register its key must show it, as a process
    would) and no TLS context made from an earlier run's SSL_CERT_FILE."""
    exits = sys.modules.get("koala_cli.cli.exits")
    if exits is not None:
        exits._SECRETS.clear()
    transport = sys.modules.get("koala_cli.transport")
    if transport is not None:  # but the usual trust (certifi's, or this session's) is the same in every process
        for key in [key for key in transport._CONTEXTS if key not in _USUAL_TRUST]:
            del transport._CONTEXTS[key]
    stall = sys.modules.get("koala_cli.cli.stall")
    if stall is not None:  # no stdout let go by an earlier run
        stall._STATE = stall._State()


# --- the real command as a process ----------------------------------------------------------


def koala_command() -> list[str]:
    """The installed `koala` script next to this interpreter, else `python -m koala_cli`."""
    script = Path(sys.executable).with_name("koala")
    if script.exists():
        return [str(script)]
    found = shutil.which("koala")
    return [found] if found else [sys.executable, "-m", "koala_cli"]


KOALA = koala_command()


def _environment(env: Mapping[str, str | None] | None) -> dict[str, str] | None:
    if env is None:
        return None
    merged = dict(os.environ)
    for name, value in env.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def run_koala(
    *args: str | bytes,
    stdin: bytes | None = None,
    env: Mapping[str, str | None] | None = None,
    prefix: Iterable[str] = (),
    timeout: float = WAIT,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real command through pipes; stdin is /dev/null unless given; ``env`` is laid over
    the environment (None removes a variable); ``prefix`` runs it under another command."""
    return subprocess.run(
        [*prefix, *KOALA, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=_environment(env),
        timeout=timeout,
        check=False,
    )


def popen_koala(*args: str, stdin: bytes | None = None, **options: Any) -> subprocess.Popen[bytes]:
    """Start the real command with stdout and stderr as pipes (unless ``options`` say otherwise);
    ``stdin``'s bytes, if any, are written and closed at once, else stdin is /dev/null."""
    settings: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    settings.update(options)
    proc = subprocess.Popen(
        [*KOALA, *args], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, **settings
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch it again
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process if it still runs, reap it, close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(WAIT)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def stderr_on_a_terminal(args: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run the command to its end with stderr on a terminal (a pseudo-terminal read until the
    process lets go of it); its exit status, stdout, and what the terminal showed."""
    master, slave = os.openpty()
    try:
        proc = popen_koala(*args, stdin=stdin, stderr=slave)
        os.close(slave)
        slave = -1
        seen = read_terminal(master)
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return proc.returncode, out, seen


def read_terminal(master: int, limit: int = 1 << 20) -> bytes:
    """What a pseudo-terminal showed until every writer let go of it (or ``WAIT`` passed, or
    ``limit`` bytes came)."""
    seen = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and len(seen) < limit:
        if not select.select([master], [], [], deadline - time.monotonic())[0]:
            break
        try:
            piece = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not piece:
            break
        seen += piece
    return seen


@contextlib.contextmanager
def running(*args: str, stdin: bytes | None = None, **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`popen_koala` for a block: the process is certainly gone when the block ends."""
    proc = popen_koala(*args, stdin=stdin, **options)
    try:
        yield proc
    finally:
        stop(proc)


def read_exactly(fd: int, size: int, timeout: float = WAIT) -> bytes:
    """Up to ``size`` bytes from a pipe: less only at end of file or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        piece = os.read(fd, size - len(data))
        if not piece:
            break
        data += piece
    return data


def read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float = WAIT) -> list[bytes]:
    """At least ``count`` whole lines from the process's stdout pipe, read as they come (bounded)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count or not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {count} lines; got {data!r}"
        if not select.select([fd], [], [], remaining)[0]:
            continue
        piece = os.read(fd, 65536)
        assert piece, f"stdout ended after {data!r}"
        data += piece
    return data.split(b"\n")[:-1]


def read_line(fd: int, timeout: float = WAIT, limit: int = 4096) -> bytes:
    """One line from a pipe, read a byte at a time so nothing after it is consumed."""
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        piece = read_exactly(fd, 1, timeout)
        if not piece:
            break
        line += piece
    return line


def read_until(fd: int, needle: bytes, timeout: float = WAIT, limit: int = 1 << 16) -> bytes:
    """Read a pipe until ``needle`` has arrived (or end of file, ``timeout``, ``limit`` bytes)."""
    data = b""
    while needle not in data and len(data) < limit:
        piece = read_exactly(fd, 1, timeout)
        if not piece:
            break
        data += piece
    return data


# --- what every command's failure looks like ------------------------------------------------


def no_traceback(err: bytes) -> None:
    """Nothing on stderr that only a crash writes: a traceback, an ignored exception, a fatal error."""
    assert b"Traceback" not in err, err
    assert b"Exception ignored" not in err, err
    assert b"Fatal Python error" not in err, err


def error_line(result: subprocess.CompletedProcess[bytes] | bytes, *, debug: bool = False) -> str:
    """The `koala: error:` line that must end stderr (after notices, or a traceback with
    ``debug``); no traceback otherwise."""
    raw = result.stderr if isinstance(result, subprocess.CompletedProcess) else result
    err = raw.decode()
    if not debug:
        no_traceback(raw)
    lines = err.splitlines()
    assert lines, "no error message"
    assert err.endswith("\n"), err
    assert lines[-1].startswith("koala: error: "), err
    return lines[-1]


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait a tenth of their backoff (the first 25-50 ms), for tests of what koala
    retries and what it says, not of how long it waits: the backoff itself is tested in
    tests/unit/test_transport.py, and timed in tests/process/test_batch_scale.py."""
    import functools

    from koala_cli import backoff, transport

    quick = functools.partial(backoff.backoff_delay, base=backoff.BACKOFF_BASE / 10)
    monkeypatch.setattr(transport, "backoff_delay", quick)


def retry_delay(notice: str) -> float:
    """The seconds a retry notice says koala waits."""
    found = re.search(r"retry\w* in (\d+(?:\.\d+)?) ?s", notice)
    assert found, notice
    return float(found.group(1))


def one_line_error(result: subprocess.CompletedProcess[bytes] | bytes) -> str:
    """stderr is exactly one `koala: error:` line, and nothing else; returns it."""
    line = error_line(result)
    raw = result.stderr if isinstance(result, subprocess.CompletedProcess) else result
    assert raw.count(b"\n") == 1, raw
    return line


# --- untrusted text ------------------------------------------------------------------------

# escape sequences and controls between the markers ① to ⑯, which must all survive in order
HOSTILE = "①\x1b]0;pwned\x07②\x1b[2J③\x9b31m④\r⑤\x08⑥\x00⑦\x7f⑧\t⑨\n⑩\u2028⑪\x85⑫\x1bPq\x1b\\⑬\x90⑭\x9d⑮\x1b(0⑯"
MARKERS = "".join(map(chr, range(0x2460, 0x2470)))


def assert_inert(out: bytes) -> str:
    """``out`` is UTF-8 without a C0 control (but newline and tab), DEL or C1 control; its text."""
    text = out.decode("utf-8")
    for char in text:
        code = ord(char)
        assert not (code < 0x20 and char not in "\n\t"), f"C0 control {code:#x} in {text!r}"
        assert not (0x7F <= code < 0xA0), f"DEL/C1 control {code:#x} in {text!r}"
    return text


# --- history files and NDJSON ---------------------------------------------------------------

HISTORY: list[dict[str, str]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "my name is Ann"},
    {"role": "assistant", "content": "Hello Ann"},
    {"role": "user", "content": "I live in Oslo"},
    {"role": "assistant", "content": "Nice"},
]


def jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Records as JSONL bytes, one a line."""
    return "".join(json.dumps(r) + "\n" for r in records).encode()


HISTORY_BYTES = jsonl(HISTORY)
PRIOR = b'{"role":"user","content":"a"}\n{"role":"assistant","content":"b"}\n'  # one turn, saved compactly


def history_file(tmp_path: Path, data: bytes = HISTORY_BYTES) -> Path:
    """``tmp_path``/chat.jsonl holding ``data`` (HISTORY's lines unless given)."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(data)
    return path


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    path.write_bytes(jsonl(records))
    return path


def read_jsonl(path: Path) -> list[Any]:
    return ndjson(path.read_bytes())


def ndjson(data: bytes) -> list[Any]:
    """The records of NDJSON output (or a JSONL file), one a line."""
    return [json.loads(line) for line in data.decode().split("\n") if line]


def jobs(*records: Mapping[str, Any]) -> bytes:
    """Batch input: one JSON job a line."""
    return jsonl(records)


# Every command that reads a history, with "{}" where its path goes: a history that is no
# regular file is refused by each (tests/cli for the kinds that cannot block, tests/process
# for those that could).
HISTORY_READERS = {
    "ask": ["ask", "-H", "{}", "hi"],
    "dry-run": ["ask", "--dry-run", "-H", "{}", "hi"],
    "chat": ["chat", "-H", "{}"],
    "history-show": ["history", "show", "{}"],
    "history-show-json": ["history", "show", "--json", "{}"],
}


def strict(line: bytes) -> Any:
    """Parse as RFC 8259 JSON, which has no NaN or Infinity (what jq accepts)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def strict_ndjson(data: bytes) -> list[dict[str, Any]]:
    """NDJSON as a pipeline reads it: whole lines only, each strict JSON."""
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [strict(line) for line in data.split(b"\n") if line]


@pytest.fixture
def keepalive() -> Iterator[KeepAlive]:
    """The keep-alive stand-in that counts connections (tests/keepalive.py)."""
    with KeepAlive() as server:
        yield server
