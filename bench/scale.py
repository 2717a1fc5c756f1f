"""The scale scenarios of ``run.py`` (issue 10): batch and chat against a keep-alive HTTPS server.

The server is ``pool_server.py`` in its own process, with a private CA made at run time
(``tls.py``); every client trusts it through ``SSL_CERT_FILE`` pointing at certifi's bundle
plus that CA.  The floor is ``minimal_batch.py``: httpx + anyio, one shared ``AsyncClient``.

``batch``     N jobs (2,000) at ``--concurrency 32``, 50 ms before each reply: wall, CPU and
              the TCP connections the server counted, koala against the floor.
``producer``  a producer writing one job every 0.2 s into ``koala batch``'s stdin: the time
              from the first job written to the first result read.
``memory``    peak RSS with 400 jobs of 256 KiB prompts (100 MiB) against 400 of 1 KiB.
``many``      100,000 jobs (plain HTTP, no latency) against a tenth of them: peak RSS.
``keys``      the set of seen ids alone (``keyset.KeySet``, a fresh process each): peak RSS of
              2,000,000 keys against 300,000 (both past ``SPILL_AT``: on disk) and 200,000.
``chat``      ``koala chat`` with three piped turns over HTTPS: connections and handshakes.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common import BenchError, Suite, alternate, child_env, cpus, median, mib, ms, paired_ratio, walls
from pool_server import reply_text
from spawner import Run
from tls import PKI, make_pki

BENCH = Path(__file__).resolve().parent
BATCH_CONCURRENCY = 32
LATENCY = 0.05
PRODUCER_JOBS = 10
PRODUCER_INTERVAL = 0.2
MEMORY_JOBS = 400
BATCH_TIMEOUT = 900.0  # the figures from before the pool: tens of ms of CPU a job


# --- the server -----------------------------------------------------------------------------


@dataclass
class Pool:
    """A running ``pool_server.py``: its URL, and its counts on request."""

    url: str
    proc: subprocess.Popen[bytes]

    def counts(self) -> dict[str, Any]:
        """Connections, handshakes, requests since the last call."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, 30)
        result: dict[str, Any] = json.loads(line)
        return result


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise BenchError("pool_server.py did not answer")
    return stream.readline()


@contextlib.contextmanager
def pool_server(pki: PKI | None, latency: float = LATENCY) -> Iterator[Pool]:
    argv = [sys.executable, str(BENCH / "pool_server.py"), f"--latency={latency:g}", "--lifetime=3600"]
    if pki is not None:
        argv += ["--cert", str(pki.cert), "--key", str(pki.key)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), cwd=BENCH)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = _readline(proc.stdout, 30).decode().strip()
        if not url.startswith("http"):
            raise BenchError(f"pool_server.py printed {url!r} instead of its URL")
        pool = Pool(url, proc)
        pool.counts()  # start counting from here
        yield pool
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# --- jobs and their checks ------------------------------------------------------------------


def write_jobs(path: Path, count: int, prompt_bytes: int = 0) -> list[str]:
    """A JSONL job file of ``count`` jobs with ids 0..count-1; returns the prompts' starts."""
    filler = "The quick brown fox jumps over the lazy dog. " * (prompt_bytes // 45 + 1)
    starts = []
    with path.open("w", encoding="utf-8") as out:
        for number in range(count):
            head = f"question {number}: "
            prompt = head + filler[: max(0, prompt_bytes - len(head))] if prompt_bytes else head + "how are you?"
            starts.append(prompt[:24])
            out.write(json.dumps({"id": number, "prompt": prompt}) + "\n")
    return starts


def results_problem(output: bytes, starts: list[str]) -> str:
    """'' when ``output`` holds one ok result for every job, with the text the server sent."""
    seen: set[int] = set()
    for line in output.split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return f"not NDJSON: {line[:80]!r}"
        number = record.get("id")
        if not isinstance(number, int) or not 0 <= number < len(starts) or number in seen:
            return f"unexpected or repeated id {number!r}"
        if record.get("ok") is not True or record.get("text") != reply_text(starts[number]):
            return f"job {number}: {json.dumps(record)[:200]}"
        seen.add(number)
    return "" if len(seen) == len(starts) else f"{len(seen)} results for {len(starts)} jobs"


def check_runs(suite: Suite, label: str, runs: list[Run], starts: list[str]) -> None:
    for number, run in enumerate(runs, 1):
        where = f"{label} (run {number})"
        if run.status != 0 or run.stderr:
            suite.check(where, False, f"exit {run.status}, stderr {run.stderr[-300:]!r}")
            continue
        problem = results_problem(run.stdout, starts)
        suite.check(where, not problem, problem)


def counted(pool: Pool, run: Callable[[], Run], into: list[dict[str, Any]]) -> Callable[[], Run]:
    """``run``, with the server's counts for exactly that run appended to ``into``."""

    def go() -> Run:
        pool.counts()
        result = run()
        into.append(pool.counts())
        return result

    return go


# --- the scenarios --------------------------------------------------------------------------


def bench_batch(suite: Suite) -> None:
    count = suite.batch_jobs
    print(f"batch: {count:,} jobs at --concurrency {BATCH_CONCURRENCY}, HTTPS, {LATENCY * 1000:.0f} ms", flush=True)
    koala, python = str(suite.koala), str(suite.python)
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        pki = make_pki(Path(folder, "pki"))
        env = {"SSL_CERT_FILE": str(pki.bundle)}
        jobs = Path(folder, "jobs.jsonl")
        starts = write_jobs(jobs, count)
        concurrency = f"--concurrency={BATCH_CONCURRENCY}"
        stats: dict[str, list[dict[str, Any]]] = {"koala": [], "floor": []}
        with pool_server(pki) as pool:
            koala_argv = [koala, "batch", concurrency, "--base-url", pool.url, str(jobs)]
            floor_argv = [python, str(BENCH / "minimal_batch.py"), concurrency, "--base-url", pool.url, str(jobs)]
            runs = alternate(
                {
                    name: counted(pool, lambda argv=argv: suite.run(argv, env=env, timeout=BATCH_TIMEOUT), stats[name])
                    for name, argv in (("koala", koala_argv), ("floor", floor_argv))
                },
                max(2, suite.reps // 2),
            )
    check_runs(suite, "koala batch", runs["koala"], starts)
    check_runs(suite, "minimal_batch.py", runs["floor"], starts)
    measured = {name: values[1:] for name, values in stats.items()}  # the warm-up round is not a figure
    wall_ratio = paired_ratio(walls(runs["koala"]), walls(runs["floor"]))
    cpu_ratio = paired_ratio(cpus(runs["koala"]), cpus(runs["floor"]))
    suite.row(
        "batch",
        f"{count:,} jobs, --concurrency {BATCH_CONCURRENCY}, HTTPS: wall vs floor",
        ms(median(walls(runs["koala"]))),
        ms(median(walls(runs["floor"]))),
        f"{wall_ratio:.2f}x",
        "<= 1.15x",
        wall_ratio <= 1.15,
    )
    suite.row(
        "batch",
        f"{count:,} jobs: CPU (user + system) vs floor",
        ms(median(cpus(runs["koala"]))),
        ms(median(cpus(runs["floor"]))),
        f"{cpu_ratio:.2f}x",
        "<= 1.25x",
        cpu_ratio <= 1.25,
    )
    most = max(s["connections"] for s in measured["koala"])
    suite.row(
        "batch",
        f"{count:,} jobs: TCP connections (most in a run), TLS handshakes",
        f"{most:,}, {max(s['handshakes'] for s in measured['koala']):,}",
        f"{max(s['connections'] for s in measured['floor']):,}, {max(s['handshakes'] for s in measured['floor']):,}",
        f"{most:,}",
        "<= 34",
        most <= 34,
    )
    suite.samples["batch"] = {name: walls(values) for name, values in runs.items()}
    suite.samples["batch-cpu"] = {name: cpus(values) for name, values in runs.items()}


def _producer_run(argv: list[str], env: dict[str, str], pool: Pool) -> tuple[float, float, bytes, bytes, int]:
    """Feed PRODUCER_JOBS jobs, one every PRODUCER_INTERVAL s; (first result after the first job, total, ...)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**child_env(), **env}
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    first: float | None = None
    written = 0
    started = time.perf_counter()
    deadline = started + 120
    os.set_blocking(proc.stdout.fileno(), False)
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, out)
            selector.register(proc.stderr, selectors.EVENT_READ, err)
            while selector.get_map() and time.perf_counter() < deadline:
                due = started + written * PRODUCER_INTERVAL
                if written < PRODUCER_JOBS and time.perf_counter() >= due:
                    proc.stdin.write(json.dumps({"id": written, "prompt": f"question {written}"}).encode() + b"\n")
                    proc.stdin.flush()
                    written += 1
                    if written == PRODUCER_JOBS:
                        proc.stdin.close()
                    continue
                wait = max(0.0, due - time.perf_counter()) if written < PRODUCER_JOBS else 1.0
                for key, _ in selector.select(wait):
                    data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    key.data.extend(data)
                    if key.data is out and first is None and b"\n" in out:
                        first = time.perf_counter() - started
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
    total = time.perf_counter() - started
    return (first if first is not None else float("nan")), total, bytes(out), bytes(err), status


def bench_producer(suite: Suite) -> None:
    print(f"producer: one job every {PRODUCER_INTERVAL} s into koala batch's stdin, HTTPS", flush=True)
    koala, python = str(suite.koala), str(suite.python)
    starts = [f"question {n}"[:24] for n in range(PRODUCER_JOBS)]
    firsts: dict[str, list[float]] = {"koala": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        pki = make_pki(Path(folder, "pki"))
        env = {"SSL_CERT_FILE": str(pki.bundle)}
        with pool_server(pki) as pool:
            commands = {
                "koala": [koala, "batch", "--base-url", pool.url, "-"],
                "floor": [python, str(BENCH / "minimal_batch.py"), "--base-url", pool.url, "/dev/stdin"],
            }
            for _round in range(max(3, suite.reps // 3)):
                for name, argv in commands.items():
                    first, _total, out, err, status = _producer_run(argv, env, pool)
                    problem = f"exit {status}, stderr {err[-300:]!r}" if status or err else results_problem(out, starts)
                    suite.check(f"producer ({name})", not problem, problem)
                    firsts[name].append(first)
    value = median(firsts["koala"])
    suite.row(
        "producer",
        "one job every 0.2 s: first result after the first job written (median, max)",
        f"{ms(value)}, {ms(max(firsts['koala']))}",
        f"{ms(median(firsts['floor']))}, {ms(max(firsts['floor']))}",
        ms(value),
        "<= 1 s",
        value <= 1.0,
    )
    suite.samples["producer"] = firsts


def bench_memory(suite: Suite) -> None:
    print(f"memory: {MEMORY_JOBS} jobs of 256 KiB prompts vs of 1 KiB, HTTPS", flush=True)
    koala, python = str(suite.koala), str(suite.python)
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        pki = make_pki(Path(folder, "pki"))
        env = {"SSL_CERT_FILE": str(pki.bundle)}
        big, small = Path(folder, "big.jsonl"), Path(folder, "small.jsonl")
        big_starts = write_jobs(big, MEMORY_JOBS, 256 * 1024)
        small_starts = write_jobs(small, MEMORY_JOBS, 1024)
        with pool_server(pki) as pool:
            runs = alternate(
                {
                    "big": lambda: suite.run([koala, "batch", "--base-url", pool.url, str(big)], env=env, timeout=600),
                    "small": lambda: suite.run([koala, "batch", "--base-url", pool.url, str(small)], env=env),
                    "floor-big": lambda: suite.run(
                        [python, str(BENCH / "minimal_batch.py"), "--concurrency=4", "--base-url", pool.url, str(big)],
                        env=env,
                    ),
                },
                max(2, suite.reps // 3),
            )
        sizes = {path.name: path.stat().st_size for path in (big, small)}
    check_runs(suite, "koala batch (256 KiB prompts)", runs["big"], big_starts)
    check_runs(suite, "koala batch (1 KiB prompts)", runs["small"], small_starts)
    check_runs(suite, "minimal_batch.py (256 KiB prompts)", runs["floor-big"], big_starts)
    rss = {name: [float(run.rss_kib) for run in values] for name, values in runs.items()}
    ratio = paired_ratio(rss["big"], rss["small"])
    suite.row(
        "memory",
        f"peak RSS, {sizes['big.jsonl'] / 2**20:.0f} MiB of prompts vs {sizes['small.jsonl'] / 2**20:.1f} MiB "
        "(--concurrency 4, the default)",
        mib(median(rss["big"])),
        mib(median(rss["small"])),
        f"{ratio:.2f}x",
        "<= 1.5x",
        ratio <= 1.5,
    )
    suite.row(
        "memory",
        "peak RSS with the 256 KiB prompts vs the floor (--concurrency 4)",
        mib(median(rss["big"])),
        mib(median(rss["floor-big"])),
        f"{paired_ratio(rss['big'], rss['floor-big']):.2f}x",
        "info",
        None,
    )
    suite.samples["memory"] = rss


def bench_many(suite: Suite) -> None:
    count = suite.many_jobs
    tenth = max(1, count // 10)
    print(f"many: {count:,} jobs vs {tenth:,} (plain HTTP, no latency, --concurrency 32)", flush=True)
    koala = str(suite.koala)
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        full, part = Path(folder, "full.jsonl"), Path(folder, "part.jsonl")
        full_starts = write_jobs(full, count)
        part_starts = write_jobs(part, tenth)
        with pool_server(None, latency=0.0) as pool:
            concurrency = f"--concurrency={BATCH_CONCURRENCY}"
            argv = [koala, "batch", concurrency, "--base-url", pool.url]
            runs = alternate(
                {
                    "full": lambda: suite.run([*argv, str(full)], timeout=3600),
                    "part": lambda: suite.run([*argv, str(part)], timeout=600),
                },
                1,
                warmup=0,
            )
    check_runs(suite, f"koala batch ({count:,} jobs)", runs["full"], full_starts)
    check_runs(suite, f"koala batch ({tenth:,} jobs)", runs["part"], part_starts)
    full_rss, part_rss = runs["full"][0].rss_kib, runs["part"][0].rss_kib
    ratio = full_rss / part_rss
    per_job = (full_rss - part_rss) * 1024 / max(count - tenth, 1)  # what is left growing with the jobs
    times = f"time {ms(runs['full'][0].wall)} vs {ms(runs['part'][0].wall)}"
    suite.row(
        "many",
        f"peak RSS, {count:,} jobs vs {tenth:,} ({per_job:+.0f} bytes a job; {times})",
        mib(full_rss),
        mib(part_rss),
        f"{ratio:.2f}x",
        "<= 1.1x (constant)",
        ratio <= 1.1,
    )
    suite.samples["many"] = {"rss_kib": [full_rss, part_rss], "wall": [runs["full"][0].wall, runs["part"][0].wall]}


_KEYS_PROBE = """
import json, sys, time
from koala_cli.keyset import SPILL_AT, KeySet
count = int(sys.argv[1])
keys = KeySet()
started = time.perf_counter()
for number in range(count):
    keys.add(f"{number}")
took = time.perf_counter() - started
assert len(keys) == count and "-1" not in keys and f"{count - 1}" in keys
with open("/proc/self/status") as status:  # VmHWM starts anew at exec; ru_maxrss keeps the parent's
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"rss_kib": peak, "seconds": took, "spilled": keys.spilled, "spill_at": SPILL_AT}))
"""
KEYS = (2_000_000, 300_000, 200_000)  # on disk, just past the spill, in memory


def bench_keys(suite: Suite) -> None:
    many, few, held = KEYS
    print(f"keys: the seen-id set alone, {many:,} keys vs {few:,} (both on disk) and {held:,}", flush=True)
    found = {}
    for count in KEYS:
        done = subprocess.run(
            [str(suite.python), "-c", _KEYS_PROBE, str(count)], capture_output=True, text=True, timeout=900
        )
        suite.check(f"KeySet probe ({count:,} keys)", done.returncode == 0, done.stderr[-300:])
        if done.returncode != 0:
            return
        found[count] = json.loads(done.stdout)
    spilled = [found[count]["spilled"] for count in KEYS]
    suite.check("KeySet spills past SPILL_AT only", spilled == [True, True, False], str(found))
    ratio = found[many]["rss_kib"] / found[few]["rss_kib"]
    suite.row(
        "keys",
        f"KeySet alone: peak RSS, {many:,} keys vs {few:,} (both on disk past {found[many]['spill_at']:,})",
        mib(found[many]["rss_kib"]),
        mib(found[few]["rss_kib"]),
        f"{ratio:.2f}x",
        "<= 1.1x (constant)",
        ratio <= 1.1,
    )
    suite.row(
        "keys",
        f"KeySet alone: peak RSS, {few:,} keys (on disk) vs {held:,} (in memory): what the spill costs",
        mib(found[few]["rss_kib"]),
        mib(found[held]["rss_kib"]),
        f"+{(found[few]['rss_kib'] - found[held]['rss_kib']) / 1024:.1f} MiB",
        "-",
        None,
    )
    suite.row(
        "keys",
        f"KeySet alone: keys a second, {many:,} (on disk) vs {held:,} (in memory)",
        f"{many / found[many]['seconds']:,.0f}/s",
        f"{held / found[held]['seconds']:,.0f}/s",
        "-",
        "-",
        None,
    )
    suite.samples["keys"] = found


def bench_chat(suite: Suite) -> None:
    print("chat: three piped turns over HTTPS", flush=True)
    koala = str(suite.koala)
    stats: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        pki = make_pki(Path(folder, "pki"))
        env = {"SSL_CERT_FILE": str(pki.bundle)}
        turns = Path(folder, "turns.txt")
        turns.write_text("first question\nsecond question\nthird question\n")
        with pool_server(pki) as pool:
            argv = [koala, "chat", "--base-url", pool.url]
            runs = alternate({"chat": counted(pool, lambda: suite.run(argv, env=env, stdin=str(turns)), stats)}, 3)
    expected = "".join(reply_text(q) + "\n" for q in ("first question", "second question", "third question"))
    for number, run in enumerate(runs["chat"], 1):
        ok = run.status == 0 and run.stdout.decode("utf-8", "replace") == expected
        suite.check(f"koala chat (run {number})", ok, f"exit {run.status}, {run.stdout[-200:]!r} {run.stderr[-200:]!r}")
    measured = stats[1:]
    most = max(s["connections"] for s in measured)
    suite.row(
        "chat",
        "koala chat, 3 turns over HTTPS: TCP connections, TLS handshakes (most in a run)",
        f"{most}, {max(s['handshakes'] for s in measured)}",
        "-",
        str(most),
        "1 (turns 2 and 3 reuse it)",
        most == 1 and max(s["handshakes"] for s in measured) == 1,
    )
