"""Run koala's benchmark suite: every goal measured side by side with its reference, in one run.

    python bench/run.py                 # the full suite (about 1.5 minutes on 2 cores)
    python bench/run.py --quick         # fewer repetitions, for a smoke check
    python bench/run.py --venv /path/to/venv --only stream,latency

Commands of a comparison are run alternately (A B A B ..., the starting one rotating each
round), after one discarded warm-up round; the table shows medians and the median of the
per-round ratios, against the goals.  Every output is checked byte for byte; a wrong output
makes the run exit 1 whatever the timings.  Children run without PYTHONUNBUFFERED,
PYTHONDONTWRITEBYTECODE, KOALA_* settings or proxies, in an empty folder, started by
``spawner.Spawner`` (so that their peak RSS is their own).  The servers are ``bench/server.py``:
one subprocess per scenario (the latency one in this process, so sending and receiving are
timed on one clock).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import scale
from common import (
    BenchError,
    Row,
    Suite,
    alternate,
    child_env,
    cpus,
    digest_line,
    expected_raw,
    json_problem,
    median,
    mib,
    ms,
    paired_ratio,
    verify,
    walls,
)
from server import StreamConfig, StreamServer, make_chunks
from spawner import Run, Spawner, SpawnError

BENCH = Path(__file__).resolve().parent
GROUPS = (
    "startup",
    "ask",
    "stream",
    "latency",
    "history",
    "batch",
    "producer",
    "memory",
    "chat",
    "keys",
    "many",
    "events",
)
SLOW_GROUPS = ("many", "events")  # minutes each: only on request
DEFAULT_GROUPS = tuple(group for group in GROUPS if group not in SLOW_GROUPS)
DOUBLING_NOISE = 0.05  # linear time doubles exactly: allow this much noise before calling it worse


# --- servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def server_process(config: StreamConfig, lifetime: float) -> Iterator[str]:
    """``bench/server.py`` in its own process (so it never competes for this one's GIL); its base URL."""
    argv = [
        sys.executable,
        str(BENCH / "server.py"),
        "--stop-on-eof",
        f"--lifetime={lifetime:g}",
        f"--chunks={config.chunks}",
        f"--size={config.size}",
        f"--mode={config.mode}",
        f"--framing={config.framing}",
        f"--write-size={config.write_size}",
        f"--interval={config.interval:g}",
    ]
    if not config.done:
        argv.append("--no-done")
    if config.openai:
        argv.append("--openai")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), cwd=BENCH)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(30):
                raise BenchError("bench/server.py did not start within 30 s")
        url = proc.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            raise BenchError(f"bench/server.py printed {url!r} instead of its URL")
        yield url
    finally:
        proc.stdin.close()  # --stop-on-eof: it stops by itself
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


# --- the scenarios --------------------------------------------------------------------------


def bench_startup(suite: Suite) -> None:
    print("startup", flush=True)
    koala, python = str(suite.koala), str(suite.python)
    reps = suite.reps * 3
    runs = alternate(
        {
            "version": lambda: suite.run([koala, "--version"]),
            "help": lambda: suite.run([koala, "--help"]),
            "typer": lambda: suite.run([python, "-c", "import typer"]),
            "library": lambda: suite.run([python, "-c", "import koala_cli"]),
        },
        reps,
    )
    for run in runs["version"]:
        suite.check("koala --version", run.status == 0 and run.stdout.startswith(b"koala "), repr(run.stdout[:80]))
    for run in runs["help"]:
        suite.check("koala --help", run.status == 0 and b"Usage:" in run.stdout, repr(run.stderr[-200:]))
    verify(suite, "python -c 'import typer'", runs["typer"], b"")
    verify(suite, "python -c 'import koala_cli'", runs["library"], b"")
    typer = walls(runs["typer"])
    for name, label in (("version", "koala --version"), ("help", "koala --help")):
        ratio = paired_ratio(walls(runs[name]), typer)
        suite.row(
            "startup",
            f"{label} vs import typer",
            ms(median(walls(runs[name]))),
            ms(median(typer)),
            f"{ratio:.2f}x",
            "<= 1.15x",
            ratio <= 1.15,
        )
    suite.row(
        "startup",
        "import koala_cli vs import typer",
        ms(median(walls(runs["library"]))),
        ms(median(typer)),
        f"{paired_ratio(walls(runs['library']), typer):.2f}x",
        "info",
        None,
    )
    probe = (
        "import sys, json, koala_cli\n"
        "print(json.dumps({m: m in sys.modules for m in ('typer', 'click', 'typer._click', 'httpx', 'anyio')}))"
    )
    loaded = suite.run([python, "-c", probe])
    suite.check("import koala_cli probe", loaded.status == 0, repr(loaded.stderr[-300:]))
    modules = json.loads(loaded.stdout or b"{}")
    heavy = [name for name, present in modules.items() if present]
    typer_free = not any(modules.get(name) for name in ("typer", "click", "typer._click"))
    suite.row(
        "startup",
        "import koala_cli loads Typer?",
        "loads " + (", ".join(heavy) or "none of typer/click/httpx/anyio"),
        "-",
        "no" if typer_free else "yes",
        "no Typer",
        typer_free,
    )
    suite.samples["startup"] = {name: walls(values) for name, values in runs.items()}


def bench_ask(suite: Suite) -> None:
    print("short ask", flush=True)
    config = StreamConfig(chunks=3, size=16)
    chunks = make_chunks(3, 16)
    koala, python = str(suite.koala), str(suite.python)
    with server_process(config, lifetime=600) as url:
        runs = alternate(
            {
                "koala": lambda: suite.run([koala, "ask", "--base-url", url, "hi"]),
                "minimal": lambda: suite.run([python, str(BENCH / "minimal.py"), "--base-url", url]),
            },
            suite.reps * 2,
        )
    expected = expected_raw("".join(chunks))
    verify(suite, "koala ask (short)", runs["koala"], expected)
    verify(suite, "minimal.py (short)", runs["minimal"], expected)
    ratio = paired_ratio(walls(runs["koala"]), walls(runs["minimal"]))
    suite.row(
        "ask",
        "short koala ask vs minimal",
        ms(median(walls(runs["koala"]))),
        ms(median(walls(runs["minimal"]))),
        f"{ratio:.2f}x",
        "<= 1.2x",
        ratio <= 1.2,
    )
    suite.samples["ask"] = {name: walls(values) for name, values in runs.items()}


def bench_stream(suite: Suite) -> None:
    print(f"stream: {suite.chunks:,} chunks x {suite.size} bytes", flush=True)
    config = StreamConfig(chunks=suite.chunks, size=suite.size)
    chunks = make_chunks(suite.chunks, suite.size)
    koala, python = str(suite.koala), str(suite.python)
    minimal = [python, str(BENCH / "minimal.py")]
    openai_config = dataclasses.replace(config, openai=True)
    with server_process(config, lifetime=1800) as url, server_process(openai_config, lifetime=1800) as openai_url:
        openai = ["--provider", "openai", "--model", "gpt-4o-mini", "--base-url", openai_url]  # as minimal.py
        runs = alternate(
            {
                "raw": lambda: suite.run([koala, "ask", "--base-url", url, "hi"]),
                "json": lambda: suite.run([koala, "ask", "--json", "--base-url", url, "hi"]),
                "minimal": lambda: suite.run([*minimal, "--base-url", url]),
                "library": lambda: suite.run([python, str(BENCH / "library.py"), "--base-url", url]),
                "minimal-none": lambda: suite.run([*minimal, "--output", "none", "--base-url", url]),
                "openai-raw": lambda: suite.run([koala, "ask", *openai, "hi"]),
                "openai-json": lambda: suite.run([koala, "ask", "--json", *openai, "hi"]),
                "openai-minimal": lambda: suite.run([*minimal, "--openai", "--base-url", openai_url]),
            },
            suite.reps,
        )
    expected = expected_raw("".join(chunks))
    verify(suite, "koala ask (stream)", runs["raw"], expected)
    verify(suite, "koala ask --json (stream)", runs["json"], lambda out: json_problem(out, chunks))
    verify(suite, "minimal.py (stream)", runs["minimal"], expected)
    verify(suite, "library.py (stream)", runs["library"], digest_line(chunks))
    verify(suite, "minimal.py --output none (stream)", runs["minimal-none"], digest_line(chunks))
    verify(suite, "koala ask --provider openai (stream)", runs["openai-raw"], expected)
    verify(suite, "koala ask --provider openai --json", runs["openai-json"], lambda out: json_problem(out, chunks))
    verify(suite, "minimal.py --openai (stream)", runs["openai-minimal"], expected)
    reference = walls(runs["minimal"])
    for name, label, floor in (
        ("raw", "koala ask", "minimal"),
        ("json", "koala ask --json", "minimal"),
        ("openai-raw", "OpenAI format: koala ask", "openai-minimal"),
        ("openai-json", "OpenAI format: koala ask --json", "openai-minimal"),
    ):
        ratio = paired_ratio(walls(runs[name]), walls(runs[floor]))
        suite.row(
            "stream",
            f"{label} vs minimal (wall)",
            ms(median(walls(runs[name]))),
            ms(median(walls(runs[floor]))),
            f"{ratio:.2f}x",
            "<= 0.5x",
            ratio <= 0.5,
        )
    for name, label in (("raw", "koala ask"), ("json", "koala ask --json")):
        suite.row(
            "stream",
            f"{label} vs minimal (CPU, user + system)",
            ms(median(cpus(runs[name]))),
            ms(median(cpus(runs["minimal"]))),
            f"{paired_ratio(cpus(runs[name]), cpus(runs['minimal'])):.2f}x",
            "info",
            None,
        )
    rss_reference = [float(run.rss_kib) for run in runs["minimal"]]
    for name, label in (("raw", "koala ask"), ("json", "koala ask --json")):
        rss = [float(run.rss_kib) for run in runs[name]]
        ratio = paired_ratio(rss, rss_reference)
        suite.row(
            "stream",
            f"{label} vs minimal (peak RSS)",
            mib(median(rss)),
            mib(median(rss_reference)),
            f"{ratio:.2f}x",
            "<= 1.2x",
            ratio <= 1.2,
        )
    library, floor = walls(runs["library"]), walls(runs["minimal-none"])
    ratio = paired_ratio(library, floor)
    suite.row(
        "library",
        "create_async_generator vs minimal, both writing nothing",
        ms(median(library)),
        ms(median(floor)),
        f"{ratio:.2f}x",
        "<= 0.75x",
        ratio <= 0.75,
    )
    suite.row(
        "library",
        "create_async_generator vs minimal writing + flushing",
        ms(median(library)),
        ms(median(reference)),
        f"{paired_ratio(library, reference):.2f}x",
        "info",
        None,
    )
    suite.samples["stream"] = {name: walls(values) for name, values in runs.items()}
    suite.samples["stream-cpu"] = {name: cpus(values) for name, values in runs.items()}
    suite.samples["stream-rss-kib"] = {name: [float(r.rss_kib) for r in values] for name, values in runs.items()}


def bench_latency(suite: Suite) -> None:
    print("latency: one event, then a pause", flush=True)
    config = StreamConfig(chunks=3, size=16, mode="first-pause", lead=0.05, pause=0.25)
    chunks = make_chunks(3, 16)
    first = chunks[0].encode("utf-8")
    sent: list[float] = []
    koala, python = str(suite.koala), str(suite.python)

    def has_first_raw(out: bytes) -> bool:
        return len(out) >= len(first)

    def has_first_json(out: bytes) -> bool:
        return b'"type":"chunk"' in out and out.endswith(b"\n")

    def timed(argv: list[str], watch: Callable[[bytes], bool]) -> Callable[[], Run]:
        def go() -> Run:
            sent.clear()
            run = suite.run(argv, watch=watch)
            if len(sent) != 1 or run.seen_at is None:
                suite.check(f"latency {argv[1:3]}", False, "the first event was not seen being sent and received")
                run.seen_at = float("nan")
            else:
                run.seen_at -= sent[0]  # from now on: the latency itself
            return run

        return go

    with StreamServer(config, lifetime=1800, on_first_event=sent.append) as server:
        url = server.base_url
        runs = alternate(
            {
                "raw": timed([koala, "ask", "--base-url", url, "hi"], has_first_raw),
                "json": timed([koala, "ask", "--json", "--base-url", url, "hi"], has_first_json),
                "minimal": timed([python, str(BENCH / "minimal.py"), "--base-url", url], has_first_raw),
            },
            suite.reps,
        )
    expected = expected_raw("".join(chunks))
    verify(suite, "koala ask (latency)", runs["raw"], expected)
    verify(suite, "koala ask --json (latency)", runs["json"], lambda out: json_problem(out, chunks))
    verify(suite, "minimal.py (latency)", runs["minimal"], expected)
    latencies = {name: [run.seen_at or float("nan") for run in values] for name, values in runs.items()}
    for name, label in (("raw", "koala ask"), ("json", "koala ask --json")):
        values = latencies[name]
        worst = max(values)
        suite.row(
            "latency",
            f"{label}: first event to pipe (median, max)",
            f"{ms(median(values))}, {ms(worst)}",
            f"{ms(median(latencies['minimal']))}, {ms(max(latencies['minimal']))}",
            ms(median(values)),
            "<= 5 ms",
            median(values) <= 0.005,
        )
    suite.samples["latency"] = latencies


def bench_events(suite: Suite) -> None:
    """The stream again, but one event per TCP write: many small reads instead of a few big ones."""
    print(f"stream, one event per write: {suite.chunks:,} chunks x {suite.size} bytes", flush=True)
    config = StreamConfig(chunks=suite.chunks, size=suite.size, mode="events")
    chunks = make_chunks(suite.chunks, suite.size)
    koala, python = str(suite.koala), str(suite.python)
    with server_process(config, lifetime=1800) as url:
        runs = alternate(
            {
                "raw": lambda: suite.run([koala, "ask", "--base-url", url, "hi"]),
                "json": lambda: suite.run([koala, "ask", "--json", "--base-url", url, "hi"]),
                "minimal": lambda: suite.run([python, str(BENCH / "minimal.py"), "--base-url", url]),
            },
            max(3, suite.reps // 2),
        )
    expected = expected_raw("".join(chunks))
    verify(suite, "koala ask (events)", runs["raw"], expected)
    verify(suite, "koala ask --json (events)", runs["json"], lambda out: json_problem(out, chunks))
    verify(suite, "minimal.py (events)", runs["minimal"], expected)
    reference = walls(runs["minimal"])
    reference_cpu = cpus(runs["minimal"])
    for name, label in (("raw", "koala ask"), ("json", "koala ask --json")):
        suite.row(
            "events",
            f"{label} vs minimal, one event per write (wall)",
            ms(median(walls(runs[name]))),
            ms(median(reference)),
            f"{paired_ratio(walls(runs[name]), reference):.2f}x",
            "info",
            None,
        )
        suite.row(
            "events",
            f"{label} vs minimal, one event per write (CPU)",
            ms(median(cpus(runs[name]))),
            ms(median(reference_cpu)),
            f"{paired_ratio(cpus(runs[name]), reference_cpu):.2f}x",
            "info",
            None,
        )
    suite.samples["events"] = {name: walls(values) for name, values in runs.items()}
    suite.samples["events-cpu"] = {name: cpus(values) for name, values in runs.items()}


def write_history(path: Path, turns: int) -> int:
    """A JSONL history of ``turns`` lines of about 500 bytes each; returns its size."""
    corpus = "".join(make_chunks(200, 64))
    lines = []
    for number in range(turns):
        role = "user" if number % 2 == 0 else "assistant"
        start = (number * 37) % 1000
        content = f"turn {number}: " + (corpus[start:] + corpus)[:440]
        lines.append(json.dumps({"role": role, "content": content}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(data)
    return len(data)


_LOAD_PROBE = """
import json, sys, time
from pathlib import Path
from koala_cli.history import load_history
small, large, reps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
times = {"small": [], "large": []}
counts = {"small": len(load_history(small)), "large": len(load_history(large))}  # warm-up
pairs = [("small", small), ("large", large)]
for number in range(reps):
    for name, path in pairs if number % 2 == 0 else pairs[::-1]:
        started = time.perf_counter()
        load_history(path)
        times[name].append(time.perf_counter() - started)
print(json.dumps({"times": times, "counts": counts}))
"""


def bench_history(suite: Suite) -> None:
    print("history: 20,000 turns (~10 MB), half and twice that", flush=True)
    koala, python = str(suite.koala), str(suite.python)
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        small, large = Path(folder, "big.jsonl"), Path(folder, "double.jsonl")
        size = write_history(small, 20_000)
        large_size = write_history(large, 40_000)
        probe = suite.run([python, "-c", _LOAD_PROBE, str(small), str(large), str(suite.reps * 2)])
        suite.check("load_history probe", probe.status == 0, repr(probe.stderr[-300:]))
        if probe.status == 0:
            result = json.loads(probe.stdout)
            suite.check("load_history counts", result["counts"] == {"small": 20_000, "large": 40_000}, str(result))
            times = result["times"]
            load = median(times["small"])
            suite.row(
                "history",
                f"load_history, 20,000 turns ({size / 1e6:.1f} MB), in process",
                ms(load),
                "-",
                ms(load),
                "< 250 ms",
                load < 0.25,
            )
            ratio = paired_ratio(times["large"], times["small"])
            suite.row(
                "history",
                f"load_history, 40,000 turns ({large_size / 1e6:.1f} MB) vs 20,000",
                ms(median(times["large"])),
                ms(load),
                f"{ratio:.2f}x",
                f"<= 2.0x (+{DOUBLING_NOISE:.0%})",
                ratio <= 2.0 * (1 + DOUBLING_NOISE),
            )
        config = StreamConfig(chunks=3, size=16)
        chunks = make_chunks(3, 16)
        half = Path(folder, "half.jsonl")
        half_size = write_history(half, 10_000)
        histories = {
            "half": (Path(folder, "chat1.jsonl"), half_size),
            "history": (Path(folder, "chat.jsonl"), size),
            "double": (Path(folder, "chat2.jsonl"), large_size),
        }
        for source, (history, _) in zip((half, small, large), histories.values(), strict=True):
            shutil.copyfile(source, history)

        def with_history(name: str) -> Callable[[], Run]:
            history, length = histories[name]

            def go() -> Run:
                run = suite.run([koala, "ask", "-H", str(history), "--base-url", url, "hi"])
                appended = history.read_bytes()[length:]
                lines = [json.loads(line) for line in appended.splitlines()]
                wanted = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "".join(chunks)}]
                suite.check("koala ask -H appends the turn", lines == wanted, repr(appended[:200]))
                os.truncate(history, length)  # back as it was, without rewriting (and re-syncing) the file
                return run

            return go

        with server_process(config, lifetime=1800) as url:
            runs = alternate(
                {
                    "half": with_history("half"),
                    "history": with_history("history"),
                    "double": with_history("double"),
                    "plain": lambda: suite.run([koala, "ask", "--base-url", url, "hi"]),
                },
                suite.reps,
            )
    expected = expected_raw("".join(chunks))
    verify(suite, "koala ask -H half.jsonl", runs["half"], expected)
    verify(suite, "koala ask -H big.jsonl", runs["history"], expected)
    verify(suite, "koala ask -H double.jsonl", runs["double"], expected)
    verify(suite, "koala ask (history baseline)", runs["plain"], expected)
    plain = walls(runs["plain"])

    def added_by(name: str) -> float:
        return median([a - b for a, b in zip(walls(runs[name]), plain, strict=True)])

    added, added_double = added_by("history"), added_by("double")
    suite.row(
        "history",
        "koala ask -H (20,000 turns) vs without -H, end to end (added)",
        ms(median(walls(runs["history"]))),
        ms(median(plain)),
        f"+{ms(added)}",
        "< 250 ms",
        added < 0.25,
    )
    suite.row(
        "history",
        "koala ask -H (40,000 turns) vs without -H, end to end (added): at most twice 250 ms",
        ms(median(walls(runs["double"]))),
        ms(median(plain)),
        f"+{ms(added_double)}",
        "< 500 ms",
        added_double < 0.5,
    )
    # Linear in the file's size: each further turn costs what the turns before it cost.  The
    # first turns are compared by their slope, not from zero: a fixed cost (or saving) of -H
    # would make a ratio of added times say nothing about linearity.
    # Per round (the runs of a round are neighbours in time), then the median of the rounds.
    # Information, not a goal: on our shared 2-core VMs the slopes, differences of differences
    # of ~0.5 s process runs, came out 0.80-1.40x for the same code within one hour.
    rounds = zip(walls(runs["half"]), walls(runs["history"]), walls(runs["double"]), strict=True)
    slopes = [((h - a) / 10_000, (d - h) / 20_000) for a, h, d in rounds]
    early, late = median([e for e, _ in slopes]), median([lt for _, lt in slopes])
    slope = late / early if early > 0 else float("inf")
    suite.row(
        "history",
        "koala ask -H, time a turn adds: turns 20,001-40,000 vs 10,001-20,000",
        f"{late * 1e6:.2f} µs",
        f"{early * 1e6:.2f} µs",
        f"{slope:.2f}x",
        "info (1.0x: linear)",
        None,
    )
    suite.samples["history-e2e"] = {name: walls(values) for name, values in runs.items()}


SCENARIOS: dict[str, Callable[[Suite], None]] = {
    "startup": bench_startup,
    "ask": bench_ask,
    "stream": bench_stream,
    "latency": bench_latency,
    "history": bench_history,
    "batch": scale.bench_batch,
    "producer": scale.bench_producer,
    "memory": scale.bench_memory,
    "chat": scale.bench_chat,
    "keys": scale.bench_keys,
    "many": scale.bench_many,
    "events": bench_events,
}


# --- the command line -----------------------------------------------------------------------


def find_koala(args: argparse.Namespace) -> tuple[Path, Path]:
    """The koala script and the interpreter of its environment."""
    if args.venv:
        bin_dir = Path(args.venv) / "bin"
        koala, python = bin_dir / "koala", bin_dir / "python"
    else:
        koala = Path(args.koala) if args.koala else Path(sys.executable).with_name("koala")
        if not koala.exists() and not args.koala:
            found = shutil.which("koala")
            koala = Path(found) if found else koala
        python = Path(args.python) if args.python else koala.with_name("python")
    if args.python:
        python = Path(args.python)
    for what, path in (("koala script", koala), ("python", python)):
        if not path.exists():
            raise SystemExit(f"run.py: no {what} at {path} (use --venv, --koala or --python)")
    return koala, python


def describe(suite: Suite) -> list[str]:
    version = suite.run([str(suite.koala), "--version"]).stdout.decode().strip()
    python = suite.run([str(suite.python), "-VV"]).stdout.decode().strip()
    probe = (
        "from importlib import metadata\n"
        "for name in ('typer', 'httpx', 'anyio', 'pydantic'):\n"
        "    try: print(f'{name} {metadata.version(name)}', end='  ')\n"
        "    except metadata.PackageNotFoundError: print(f'{name} -', end='  ')"
    )
    packages = suite.run([str(suite.python), "-c", probe]).stdout.decode().strip()
    return [
        f"date      {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine   {platform.machine()}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"Linux {platform.release()}",
        f"python    {python.splitlines()[0] if python else '?'}",
        f"koala     {version} at {suite.koala}",
        f"packages  {packages}",
        f"reps      {suite.reps} (startup x3, short ask x2, history load x2), after one warm-up round",
        f"load      {load_average()} (1/5/15 min) at the start",
    ]


def load_average() -> str:
    """Other work on the machine makes every figure noisier: say how much there was."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def table(rows: Sequence[Row]) -> str:
    cells = [["group", "measurement", "koala", "reference", "value", "goal", "result"]]
    for row in rows:
        verdict = "info" if row.ok is None else ("PASS" if row.ok else "FAIL")
        cells.append([row.group, row.name, row.koala, row.reference, row.value, row.goal, verdict])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |" for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="koala's benchmark suite (see bench/README.md).")
    parser.add_argument("--reps", type=int, default=10, help="measured rounds per comparison (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke check, not figures to quote")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_GROUPS),
        help=f"comma-separated groups among {','.join(GROUPS)} (default: all but {' and '.join(SLOW_GROUPS)})",
    )
    parser.add_argument("--venv", help="measure the koala installed in this virtualenv")
    parser.add_argument("--koala", help="the koala script (default: the one next to this interpreter)")
    parser.add_argument("--python", help="the interpreter for the references (default: the one next to koala)")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks of the streaming case")
    parser.add_argument("--size", type=int, default=16, help="bytes per chunk of the streaming case")
    parser.add_argument("--batch-jobs", type=int, default=2000, help="jobs of the batch case (default 2,000)")
    parser.add_argument("--many-jobs", type=int, default=100_000, help="jobs of the many case (default 100,000)")
    parser.add_argument("--save", metavar="FILE", help="also write every sample as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal fails, not only when a check does")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 3
    unknown = set(args.only.split(",")) - set(GROUPS)
    if unknown or args.reps < 1:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}" if unknown else "--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    koala, python = find_koala(args)
    with (
        tempfile.TemporaryDirectory(prefix="koala-bench-cwd-") as cwd,
        Spawner(child_env(), cwd) as spawner,  # forked first, while this process is small
    ):
        suite = Suite(
            koala=koala,
            python=python,
            reps=args.reps,
            chunks=args.chunks,
            size=args.size,
            spawner=spawner,
            batch_jobs=args.batch_jobs,
            many_jobs=args.many_jobs,
        )
        header = describe(suite)
        print("\n".join(header), flush=True)
        started = time.perf_counter()
        selected = args.only.split(",")
        try:
            for name in GROUPS:
                if name in selected:
                    SCENARIOS[name](suite)
        except (BenchError, SpawnError) as exc:
            print(f"run.py: cannot go on: {exc}", file=sys.stderr)
            return 2
        elapsed = time.perf_counter() - started
        header.append(f"spawner   peak RSS {mib(spawner.helper_rss_kib)} (no child's peak RSS can read below it)")
    print()
    print("\n".join(header))
    print(f"took      {elapsed:.0f} s; load {load_average()} at the end")
    print()
    print(table(suite.rows))
    failed = [row.name for row in suite.rows if row.ok is False]
    print()
    print(f"goals: {sum(row.ok is True for row in suite.rows)} pass, {len(failed)} fail")
    if suite.problems:
        print(f"CHECKS FAILED ({len(suite.problems)}):")
        for problem in suite.problems[:20]:
            print(f"  {problem}")
    else:
        print("checks: every output matched, byte for byte")
    if args.save:
        record = {
            "header": header,
            "rows": [row.__dict__ for row in suite.rows],
            "problems": suite.problems,
            "samples": suite.samples,
        }
        Path(args.save).write_text(json.dumps(record, indent=1) + "\n")
    if suite.problems or (args.strict and failed):
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
