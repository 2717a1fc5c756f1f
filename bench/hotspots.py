"""Where koala's time goes: import times and cProfile of start-up and of the streaming path.

    python bench/hotspots.py                    # the koala next to this interpreter
    python bench/hotspots.py --venv /path/to/venv --top 25

1. ``-X importtime`` of ``koala --version``, ``koala --help`` and a short ``koala ask``,
   against ``import typer`` and the minimal consumer: the total, and the modules koala
   imports that the reference does not (heaviest first).
2. ``python -m cProfile`` of ``koala --help``, a short ``koala ask``, ``koala ask`` and
   ``koala ask --json`` over the streaming case, and ``bench/library.py``: the functions with
   the most own time, and koala's own functions by cumulative time.

Figures under a profiler are inflated and only good for proportions; ``run.py`` measures.
(Named ``hotspots`` because a ``profile.py`` here would shadow the stdlib module cProfile uses.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from run import BENCH, child_env, server_process
from server import StreamConfig

_STATS = """
import pstats, sys
stats = pstats.Stats(sys.argv[1])
stats.sort_stats("tottime").print_stats(int(sys.argv[2]))
stats.sort_stats("cumulative").print_stats("koala_cli", int(sys.argv[2]))
"""


# Children run in an empty folder: ``python -c``/``-m`` put the current folder first on sys.path, and a
# koala_cli there (the source tree) would shadow the installed one being profiled.
NEUTRAL = "/"


def import_times(python: str, argv: list[str]) -> dict[str, tuple[int, int]]:
    """Module -> (self, cumulative) microseconds, from ``-X importtime``."""
    done = subprocess.run(
        [python, "-X", "importtime", *argv], capture_output=True, env=child_env(), cwd=NEUTRAL, check=False, timeout=120
    )
    times: dict[str, tuple[int, int]] = {}
    for line in done.stderr.decode("utf-8", "replace").splitlines():
        if not line.startswith("import time:") or "| imported package" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        times[name.strip()] = (int(own), int(cumulative))
    return times


def compare_imports(
    label: str, times: dict[str, tuple[int, int]], reference: dict[str, tuple[int, int]], top: int
) -> None:
    total = sum(own for own, _ in times.values()) / 1000
    base = sum(own for own, _ in reference.values()) / 1000
    extra = {name: value for name, value in times.items() if name not in reference}
    extra_ms = sum(own for own, _ in extra.values()) / 1000
    print(f"\n{label}: imports {total:.1f} ms vs reference {base:.1f} ms;", end=" ")
    print(f"{len(extra)} modules only here ({extra_ms:.1f} ms)")
    for name in ("typer", "pydantic", "rich", "httpx", "anyio", "koala_cli.transport"):
        if name in times:
            print(f"  {name:24} cumulative {times[name][1] / 1000:6.1f} ms")
    print("  heaviest modules only here (own time):")
    for name, (own, _) in sorted(extra.items(), key=lambda item: -item[1][0])[:top]:
        print(f"    {own / 1000:6.2f} ms  {name}")


def profile(python: str, argv: list[str], folder: Path, name: str, top: int) -> None:
    out = folder / f"{name}.prof"
    subprocess.run(
        [python, "-m", "cProfile", "-o", str(out), *argv],
        stdout=subprocess.PIPE,  # a pipe, as in run.py; read and dropped
        stderr=subprocess.DEVNULL,
        env=child_env(),
        cwd=NEUTRAL,
        check=False,
        timeout=300,
    )
    print(f"\n===== cProfile: {name}: {' '.join(argv[-4:])}")
    shown = subprocess.run([python, "-c", _STATS, str(out), str(top)], capture_output=True, check=False)
    lines = [line for line in shown.stdout.decode().splitlines() if line.strip()]
    print("\n".join(line[:200] for line in lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile koala's start-up and streaming path.")
    parser.add_argument("--venv", help="the virtualenv whose koala to profile (default: this interpreter's)")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--top", type=int, default=15, help="lines per listing")
    args = parser.parse_args(argv)
    bin_dir = Path(args.venv) / "bin" if args.venv else Path(sys.executable).parent
    koala, python = str(bin_dir / "koala"), str(bin_dir / "python")
    minimal, library = str(BENCH / "minimal.py"), str(BENCH / "library.py")

    typer = import_times(python, ["-c", "import typer"])
    compare_imports("koala --version vs import typer", import_times(python, [koala, "--version"]), typer, args.top)
    compare_imports("koala --help vs import typer", import_times(python, [koala, "--help"]), typer, args.top)
    with server_process(StreamConfig(chunks=3, size=16), lifetime=300) as url:
        compare_imports(
            "short koala ask vs minimal.py",
            import_times(python, [koala, "ask", "--base-url", url, "hi"]),
            import_times(python, [minimal, "--base-url", url]),
            args.top,
        )
        with tempfile.TemporaryDirectory(prefix="koala-hotspots-") as folder:
            profile(python, [koala, "--help"], Path(folder), "help", args.top)
            profile(python, [koala, "ask", "--base-url", url, "hi"], Path(folder), "short-ask", args.top)
    with (
        server_process(StreamConfig(chunks=args.chunks, size=args.size), lifetime=600) as url,
        tempfile.TemporaryDirectory(prefix="koala-hotspots-") as folder,
    ):
        profile(python, [koala, "ask", "--base-url", url, "hi"], Path(folder), "stream-raw", args.top)
        profile(python, [koala, "ask", "--json", "--base-url", url, "hi"], Path(folder), "stream-json", args.top)
        profile(python, [library, "--base-url", url], Path(folder), "library", args.top)
        profile(python, [minimal, "--base-url", url], Path(folder), "minimal", args.top)


if __name__ == "__main__":
    main()
