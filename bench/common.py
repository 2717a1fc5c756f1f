"""What every benchmark scenario shares: the child environment, alternation, the table's rows, checks."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spawner import Run, Spawner

CHILD_TIMEOUT = 120.0  # no single command may run longer
_DROPPED_ENV = (
    "PYTHONUNBUFFERED",
    "PYTHONDEVMODE",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONTRACEMALLOC",
    "PYTHONASYNCIODEBUG",
    "PYTHONDONTWRITEBYTECODE",  # measure koala as installed: with its bytecode cached
)
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class BenchError(Exception):
    """The suite itself cannot go on (a command hung, a server did not start)."""


# --- children ------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The caller's environment without buffering switches, koala settings or proxies."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED_ENV and not name.startswith("KOALA_") and name.upper() not in _PROXY_ENV
    }
    env["NO_PROXY"] = "*"
    return env


# --- measuring and reporting ----------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: what koala did, what the reference did, and the verdict."""

    group: str
    name: str
    koala: str
    reference: str
    value: str
    goal: str
    ok: bool | None  # None: shown for information, not judged


@dataclass
class Suite:
    """What the whole run needs and what it found."""

    koala: Path
    python: Path
    reps: int
    chunks: int
    size: int
    spawner: Spawner
    batch_jobs: int = 2000
    many_jobs: int = 100_000
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str],
        *,
        watch: Callable[[bytes], bool] | None = None,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = CHILD_TIMEOUT,
    ) -> Run:
        return self.spawner.run(argv, watch=watch, timeout=timeout, env=env, stdin=stdin)

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        if not ok:
            self.problems.append(f"{what}: {detail}" if detail else what)
            print(f"  CHECK FAILED: {what}: {detail}", file=sys.stderr, flush=True)

    def row(self, group: str, name: str, koala: str, reference: str, value: str, goal: str, ok: bool | None) -> None:
        self.rows.append(Row(group, name, koala, reference, value, goal, ok))
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {name}: {koala} vs {reference} -> {value} (goal {goal}) {verdict}", flush=True)


def alternate(commands: dict[str, Callable[[], Run]], reps: int, warmup: int = 1) -> dict[str, list[Run]]:
    """Run the commands in turn, ``warmup + reps`` rounds, each round starting one later."""
    names = list(commands)
    results: dict[str, list[Run]] = {name: [] for name in names}
    for round_number in range(warmup + reps):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            run = commands[name]()
            if round_number >= warmup:
                results[name].append(run)
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of the per-round ratios a/b."""
    return median([x / y for x, y in zip(a, b, strict=True)])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def walls(runs: Sequence[Run]) -> list[float]:
    return [run.wall for run in runs]


def cpus(runs: Sequence[Run]) -> list[float]:
    return [run.cpu for run in runs]


def expected_raw(text: str) -> bytes:
    """``koala ask``'s raw output: the text, and a newline if it has none at its end."""
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def digest_line(chunks: Sequence[str]) -> bytes:
    """What ``minimal.py --output none`` and ``library.py`` print."""
    return f"{len(chunks)} {hashlib.sha256(''.join(chunks).encode('utf-8')).hexdigest()}\n".encode()


def json_problem(output: bytes, chunks: Sequence[str]) -> str:
    """Why ``koala ask --json`` output is not the NDJSON of these chunks ('' when it is)."""
    try:
        records = [json.loads(line) for line in output.decode("utf-8").splitlines()]
    except ValueError as exc:
        return f"not NDJSON: {exc}"
    if len(records) < 2 or records[0].get("type") != "start" or records[-1].get("type") != "done":
        return "does not start with a start record and end with a done record"
    texts = [record.get("text") for record in records[1:-1] if record.get("type") == "chunk"]
    if len(texts) != len(records) - 2:
        return "records other than chunks between start and done"
    text = "".join(chunks)
    if "".join(str(t) for t in texts) != text:
        return "the chunks do not join to the text sent"
    done = records[-1]
    if done.get("text") != text or done.get("chunks") != len(chunks):
        return f"the done record says {done.get('chunks')} chunks / {len(str(done.get('text')))} chars"
    return ""


def verify(suite: Suite, label: str, runs: Sequence[Run], expected: bytes | Callable[[bytes], str]) -> None:
    """Every run exited 0, wrote nothing on stderr, and wrote exactly what it should."""
    for number, run in enumerate(runs, 1):
        where = f"{label} (run {number})"
        if run.status != 0 or run.stderr:
            suite.check(where, False, f"exit {run.status}, stderr {run.stderr[-300:]!r}")
            continue
        if isinstance(expected, bytes):
            if run.stdout != expected:
                at = next((i for i, (x, y) in enumerate(zip(run.stdout, expected, strict=False)) if x != y), None)
                at = min(len(run.stdout), len(expected)) if at is None else at
                detail = f"{len(run.stdout)} bytes, expected {len(expected)}; first difference at byte {at}"
                suite.check(where, False, detail)
        else:
            problem = expected(run.stdout)
            suite.check(where, not problem, problem)
