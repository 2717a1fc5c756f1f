"""The checks of interop/run: the real `koala` against real server software on loopback.

Started by interop/run, which installs everything first. Prints one ``PASS name`` or
``FAIL name: why`` line per check, then the versions it ran; exits 1 if any check failed.
Every program is started here with its own process group, listens on 127.0.0.1 only, and is
stopped at the end (and by interop/run's trap, through the process groups written to
WORK/pgids). Every wait is bounded. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

# --- processes --------------------------------------------------------------------------------


class Programs:
    """The programs this run started, each in its own process group, all stopped at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 -- kept open for the child
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()
        self.running.append(proc)
        with open(self.work / "pgids", "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        with contextlib.suppress(ProcessLookupError):  # anything it left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError, urllib.error.URLError, ConnectionError):
            if ready():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")


def port_open(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return ready


def http_get(url: str, timeout: float = 10, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy from the environment
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: Any, timeout: float = 60, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- koala --------------------------------------------------------------------------------------


class Koala:
    def __init__(self, command: str, home: Path) -> None:
        self.command = command
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KOALA_", "OPENAI_"))}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            self.env.pop(name, None)
            self.env.pop(name.lower(), None)
        self.env.pop("PYTHONUNBUFFERED", None)
        self.env["HOME"] = str(home)
        self.env["XDG_CONFIG_HOME"] = str(home / ".config")
        self.env["XDG_STATE_HOME"] = str(home / ".state")

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self.command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    """A run in one line, for FAIL messages."""
    return f"exit {done.returncode}, stdout {done.stdout[:160]!r}, stderr {done.stderr.strip()[:400]!r}"


def expect(condition: bool, why: str) -> None:
    if not condition:
        raise AssertionError(why)


def expect_exact(done: subprocess.CompletedProcess[str], text: str) -> None:
    expect(
        (done.returncode, done.stdout, done.stderr) == (0, text + "\n", ""),
        f"expected exit 0 and exactly {text!r} with nothing on stderr; got {outcome(done)}",
    )


def history_lines(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [(m["role"], m["content"]) for m in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


def json_records(done: subprocess.CompletedProcess[str], text: str, model: str) -> None:
    try:
        records = [json.loads(line) for line in done.stdout.splitlines()]
    except ValueError as exc:
        raise AssertionError(f"stdout is not NDJSON ({exc}); got {outcome(done)}") from exc
    expect(done.returncode == 0 and records, f"expected exit 0 and records; got {outcome(done)}")
    chunks = [r.get("text") for r in records[1:-1]]
    expect(records[0] == {"type": "start", "model": model}, f"first record {records[0]}")
    expect(all(r.get("type") == "chunk" for r in records[1:-1]), "records between start and done are not all chunks")
    expect("".join(chunks) == text, f"chunks join to {''.join(chunks)!r}, expected {text!r}")
    last = records[-1]
    expect(last.get("type") == "done" and last.get("text") == text, f"last record {last}")


# --- stand-ins: a koala.sh-protocol server and an upstream that fails mid-stream ----------------


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False


KOALA_TEXT = "Hello from a koala.sh stand-in: wörld ✓"
KOALA_CHUNKS = ["Hello from a ", "koala.sh stand-in: ", "wörld ✓"]


def koala_standin() -> tuple[_Server, list[dict[str, str]]]:
    """koala.sh's protocol: ``POST /api/gpt/`` -> chunked ``text/event-stream`` with CRLF, pings, [DONE]."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            seen.append(
                {**{k.lower(): v for k, v in self.headers.items()}, "path": self.path, "input": body.get("input")}
            )
            if self.path != "/api/gpt/":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [b": ping\r\n\r\n"] + [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in KOALA_CHUNKS]
            for event in [*events, b"data: [DONE]\r\n\r\n"]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, seen


CUT_CHUNKS = ["The upstream ", "started fine"]


def cutting_upstream() -> _Server:
    """An OpenAI-compatible upstream that streams two chunks, then drops the connection mid-reply."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, text in enumerate(CUT_CHUNKS):
                delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
                chunk = {
                    "id": "chatcmpl-cut",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": "cut",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            time.sleep(0.3)  # let the proxy forward what came before the failure
            self.connection.shutdown(socket.SHUT_RDWR)  # no last chunk: the body is cut
            self.close_connection = True

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


# --- the run ------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.programs = Programs(self.work)
        self.home = self.work / "home"
        self.home.mkdir(exist_ok=True)
        self.koala = Koala(args.koala, self.home)
        self.results: list[tuple[str, str | None]] = []
        self.versions: dict[str, str] = {}
        self.only = re.compile(args.only) if args.only else None
        self.counter = 0

    def tmp(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"{self.counter:02d}-{name}"

    def check(self, name: str, fn: Callable[[], None]) -> None:
        if self.only and not self.only.search(name):
            return
        try:
            fn()
        except subprocess.TimeoutExpired as exc:
            self.report(name, f"timed out after {exc.timeout:.0f} s")
        except Exception as exc:
            self.report(name, f"{type(exc).__name__ + ': ' if not isinstance(exc, AssertionError) else ''}{exc}")
        else:
            self.report(name, None)

    def report(self, name: str, why: str | None) -> None:
        self.results.append((name, why))
        say(f"PASS {name}" if why is None else f"FAIL {name}: {why}")

    def skip_all(self, names: list[str], why: str) -> None:
        for name in names:
            if not self.only or self.only.search(name):
                self.report(name, why)

    def wanted(self, names: list[str]) -> bool:
        return not self.only or any(self.only.search(n) for n in names)


# --- proxies ------------------------------------------------------------------------------------

PROXY_CHECKS = [
    "tinyproxy: ask through an HTTP proxy",
    "tinyproxy: ask with proxy credentials",
    "tinyproxy: 407 without credentials, plain-http target",
    "tinyproxy: 403 refusal, plain-http target",
    "microsocks: ask through a SOCKS5 proxy",
    "squid: ask through an HTTP proxy",
    "squid: 403 deny, plain-http target",
]


def tinyproxy(run: Run, name: str, extra: str) -> int:
    port = free_port()
    conf = run.work / f"{name}.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nBindSame no\nTimeout 30\nMaxClients 20\n"
        f'LogFile "{run.work}/{name}.access.log"\nLogLevel Info\nPidFile "{run.work}/{name}.pid"\n'
        f'DefaultErrorFile "/usr/share/tinyproxy/default.html"\n'
        f"{extra}\n"
    )
    proc = run.programs.start(name, ["tinyproxy", "-d", "-c", str(conf)])
    wait_until(port_open(port), proc, 20, name)
    return port


def squid(run: Run) -> tuple[int, int]:
    """One squid, two ports: ``open`` serves loopback clients, ``closed`` denies everything."""
    open_port, closed_port = free_port(), free_port()
    conf = run.work / "squid.conf"
    conf.write_text(
        f"http_port 127.0.0.1:{open_port} name=open\n"
        f"http_port 127.0.0.1:{closed_port} name=closed\n"
        "acl closed myportname closed\n"
        "http_access deny closed\n"
        "http_access allow localhost\n"
        "http_access deny all\n"
        # no files (squid drops to its own user, which cannot write into the run's directory),
        # no cache, no name server but a dead loopback one, a quick exit
        "pid_filename none\ncache_log /dev/null\naccess_log none\ncache deny all\n"
        "dns_nameservers 127.0.0.1\nshutdown_lifetime 1 seconds\n"
    )
    proc = run.programs.start("squid", ["squid", "-N", "-f", str(conf)])
    wait_until(port_open(closed_port), proc, 30, "squid")
    return open_port, closed_port


def proxy_refusal(run: Run, proxy: str, status: str, served: list[dict[str, str]], base: str) -> None:
    before = len(served)
    done = run.koala.run("ask", "--base-url", base, "--proxy", proxy, "--retries", "0", "hi")
    expect(len(served) == before, "the request reached the target despite the refusal")
    expect(
        done.returncode == 3 and "proxy" in done.stderr.lower() and status in done.stderr,
        f"expected exit 3 naming the proxy's refusal {status}; got {outcome(done)}",
    )


def proxy_checks(run: Run) -> None:
    if not run.wanted(PROXY_CHECKS):
        return
    missing = [p for p in ("tinyproxy", "microsocks", "squid") if not shutil.which(p)]
    if missing:
        run.skip_all(PROXY_CHECKS, f"not installed: {', '.join(missing)}")
        return
    server, served = koala_standin()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        plain = tinyproxy(run, "tinyproxy", "Allow 127.0.0.1")
        auth = tinyproxy(run, "tinyproxy-auth", "Allow 127.0.0.1\nBasicAuth koala s3cret")
        deny = tinyproxy(run, "tinyproxy-deny", "Deny 127.0.0.1")
        socks = free_port()
        micro = run.programs.start("microsocks", ["microsocks", "-i", "127.0.0.1", "-p", str(socks)])
        wait_until(port_open(socks), micro, 20, "microsocks")
        squid_open, squid_closed = squid(run)

        def via_http() -> None:
            done = run.koala.run("ask", "--base-url", base, "--proxy", f"http://127.0.0.1:{plain}", "hi")
            expect_exact(done, KOALA_TEXT)
            expect("tinyproxy" in served[-1].get("via", ""), f"no Via: tinyproxy header at the target: {served[-1]}")

        def with_credentials() -> None:
            done = run.koala.run("ask", "--base-url", base, "--proxy", f"http://koala:s3cret@127.0.0.1:{auth}", "hi")
            expect_exact(done, KOALA_TEXT)
            expect("tinyproxy" in served[-1].get("via", ""), "the request did not come through tinyproxy")

        def via_socks() -> None:
            before = run.programs.log("microsocks")
            done = run.koala.run("ask", "--base-url", base, "--proxy", f"socks5://127.0.0.1:{socks}", "hi")
            expect_exact(done, KOALA_TEXT)
            after = run.programs.log("microsocks")
            expect(len(after) > len(before), "microsocks logged no client: the request did not use the proxy")

        run.check(PROXY_CHECKS[0], via_http)
        run.check(PROXY_CHECKS[1], with_credentials)
        run.check(PROXY_CHECKS[2], lambda: proxy_refusal(run, f"http://127.0.0.1:{auth}", "407", served, base))
        run.check(PROXY_CHECKS[3], lambda: proxy_refusal(run, f"http://127.0.0.1:{deny}", "403", served, base))

        def via_squid() -> None:
            done = run.koala.run("ask", "--base-url", base, "--proxy", f"http://127.0.0.1:{squid_open}", "hi")
            expect_exact(done, KOALA_TEXT)
            expect("squid" in served[-1].get("via", ""), f"no Via: squid header at the target: {served[-1]}")

        run.check(PROXY_CHECKS[4], via_socks)
        run.check(PROXY_CHECKS[5], via_squid)
        run.check(PROXY_CHECKS[6], lambda: proxy_refusal(run, f"http://127.0.0.1:{squid_closed}", "403", served, base))
    except Exception as exc:
        run.skip_all([n for n in PROXY_CHECKS if n not in dict(run.results)], f"setup failed: {exc}")
    finally:
        server.shutdown()
        server.server_close()
        run.programs.stop_all()


# --- LiteLLM ------------------------------------------------------------------------------------

LITELLM_TEXT = "Hello wörld, from LiteLLM's mock ✓ — streamed in pieces of three characters."
LITELLM_CHECKS = [
    "litellm: ask streams exact text",
    "litellm: --json records",
    "litellm: -H two turns",
    "litellm: koala models --provider openai lists the proxy's models",
    "litellm: error before the first chunk (mock_streaming_error)",
    "litellm: upstream failure mid-stream (error event)",
    "litellm -> llama-cpp: finish_reason length (max_tokens 5) gives a notice",
]


def litellm_checks(run: Run, llama: str | None) -> None:
    if not run.wanted(LITELLM_CHECKS):
        return
    if not Path(run.args.litellm).exists():
        run.skip_all(LITELLM_CHECKS, f"not installed: {run.args.litellm}")
        return
    upstream = cutting_upstream()
    port = free_port()
    config = run.work / "litellm.yaml"
    upstream_base = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    config.write_text(
        "model_list:\n"
        "  - model_name: mock-hello\n"
        "    litellm_params:\n"
        "      model: openai/mock-hello\n"
        f"      mock_response: {json.dumps(LITELLM_TEXT)}\n"
        "  - model_name: mock-error-start\n"
        "    litellm_params:\n"
        "      model: openai/mock-error-start\n"
        '      mock_response: "Exception: mock_streaming_error"\n'
        "  - model_name: upstream-cut\n"
        "    litellm_params:\n"
        "      model: openai/cut\n"
        f"      api_base: {upstream_base}\n"
        "      api_key: sk-local-upstream\n"
        "      max_retries: 0\n"
        "  - model_name: llama-length\n"
        "    litellm_params:\n"
        "      model: openai/tiny-loop\n"
        f"      api_base: {llama or 'http://127.0.0.1:9'}/v1\n"
        "      api_key: none\n"
        "      max_tokens: 5\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  num_retries: 0\n"
        "  request_timeout: 20\n"
        "general_settings:\n"
        "  master_key: sk-interop-master\n"
    )
    env = dict(os.environ)
    # no fetches from the internet: local cost map and presets, and any stray request dies on loopback
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
        LITELLM_LOCAL_BLOG_POSTS="True",
        LITELLM_MODEL_COST_MAP_URL="http://127.0.0.1:9/",
        LITELLM_BLOG_POSTS_URL="http://127.0.0.1:9/",
        LITELLM_ANTHROPIC_BETA_HEADERS_URL="http://127.0.0.1:9/",
        LITELLM_AUTOROUTER_PRESETS_URL="http://127.0.0.1:9/",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        DISABLE_ADMIN_UI="True",
    )
    key = "sk-interop-master"
    base = f"http://127.0.0.1:{port}"
    proc = run.programs.start(
        "litellm",
        [run.args.litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1", "--telemetry", "False"],
        env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: http_get(f"{base}/health/liveliness", 5)[0] == 200, proc, 240, "the LiteLLM proxy")
        ask = ("ask", "--provider", "openai", "--base-url", base, "--api-key", key, "--retries", "0")

        def simple() -> None:
            expect_exact(run.koala.run(*ask, "-m", "mock-hello", "hi"), LITELLM_TEXT)

        def records() -> None:
            json_records(run.koala.run(*ask, "-m", "mock-hello", "--json", "hi"), LITELLM_TEXT, "mock-hello")

        def two_turns() -> None:
            history = run.tmp("litellm.jsonl")
            for prompt in ("my name is Ann", "what is my name?"):
                expect_exact(run.koala.run(*ask, "-m", "mock-hello", "-H", str(history), prompt), LITELLM_TEXT)
            want = [("user", "my name is Ann"), ("assistant", LITELLM_TEXT)]
            want += [("user", "what is my name?"), ("assistant", LITELLM_TEXT)]
            expect(history_lines(history) == want, f"history {history_lines(history)}")

        def models() -> None:
            done = run.koala.run("models", "--provider", "openai", "--base-url", base, "--api-key", key)
            names = {"mock-hello", "mock-error-start", "upstream-cut", "llama-length"}
            listed = set(done.stdout.split())
            expect(
                done.returncode == 0 and names <= listed and listed <= names | {"*", "(default)"},
                f"expected the proxy's models {sorted(names)}; got {outcome(done)}",
            )

        def error_start() -> None:
            history = run.tmp("litellm-error.jsonl")
            done = run.koala.run(*ask, "-m", "mock-error-start", "-H", str(history), "hi")
            expect(
                done.returncode == 4 and "mock error raised mid-stream" in done.stderr and done.stdout == "",
                f"expected exit 4 with LiteLLM's message; got {outcome(done)}",
            )
            expect(not history.exists(), "the failed turn was saved")

        def error_mid() -> None:
            history = run.tmp("litellm-cut.jsonl")
            done = run.koala.run(*ask, "-m", "upstream-cut", "-H", str(history), "hi")
            partial = "".join(CUT_CHUNKS)
            expect(
                done.returncode == 4
                and done.stdout.rstrip("\n") == partial
                and done.stderr.startswith("koala: error: ")
                and done.stderr.count("\n") == 1
                and "Connection error" in done.stderr  # LiteLLM's own message
                and '{"error"' not in done.stderr,
                f"expected {partial!r} on stdout, then exit 4 with the server's message; got {outcome(done)}",
            )
            expect(not history.exists(), "the failed turn was saved")

        def length() -> None:
            expect(llama is not None, "the llama-cpp-python server is not running")
            history = run.tmp("litellm-length.jsonl")
            done = run.koala.run(*ask, "-m", "llama-length", "-H", str(history), "hi")
            words = done.stdout.split()
            expect(
                done.returncode == 0 and words == (LLAMA_REPLY.split() * 2)[:5],
                f"expected the first five words of the chain and exit 0; got {outcome(done)}",
            )
            expect("length" in done.stderr, f"no notice of finish_reason length on stderr; got {outcome(done)}")

        checks = (simple, records, two_turns, models, error_start, error_mid, length)
        for name, fn in zip(LITELLM_CHECKS, checks, strict=True):
            run.check(name, fn)
    except Exception as exc:
        tail = run.programs.log("litellm")[-600:].replace("\n", " | ")
        run.skip_all([n for n in LITELLM_CHECKS if n not in dict(run.results)], f"setup failed: {exc}; log: {tail}")
    finally:
        run.programs.stop(proc)
        upstream.shutdown()
        upstream.server_close()


# --- llama-cpp-python ---------------------------------------------------------------------------

LLAMA_REPLY = "Hello wörld from a tiny llama"
LLAMA_CHECKS = [
    "llama-cpp: ask streams exact text",
    "llama-cpp: --json records",
    "llama-cpp: -H two turns",
    "llama-cpp: batch, one job at a time",
    "llama-cpp: chat_format llama-2 with -H and -s",
    "llama-cpp: strict chat template (Llama-2-chat) with -H and -s",
    "llama-cpp: finish_reason length (--max-tokens 5) gives a notice",
    "llama-cpp: a reply cut at a full context (no finish_reason, no [DONE]) is not saved",
    "llama-cpp: a stream cut by another request is not saved",
]


def read_some(fd: int, timeout: float) -> bytes:
    ready = select.select([fd], [], [], timeout)[0]
    return os.read(fd, 65536) if ready else b""


def start_llama(run: Run) -> str:
    """llama-cpp-python's server with the tiny models, one alias each; its base URL."""
    python = Path(run.args.llama_python)
    models = Path(run.args.models)
    if not python.exists() or not (models / "tiny-stop.gguf").exists():
        raise RuntimeError(f"not built: {python} or {models}/tiny-stop.gguf")
    port = free_port()
    common = {"n_threads": 1, "n_threads_batch": 1, "verbose": False, "n_batch": 64}
    config = {
        "host": "127.0.0.1",
        "port": port,
        "interrupt_requests": True,  # the default, said out loud: the cut-stream check relies on it
        "models": [
            {**common, "model": str(models / "tiny-stop.gguf"), "model_alias": "tiny", "chat_format": "llama-2",
             "n_ctx": 512},
            {**common, "model": str(models / "tiny-strict.gguf"), "model_alias": "tiny-strict", "n_ctx": 512},
            {**common, "model": str(models / "tiny-loop.gguf"), "model_alias": "tiny-loop", "chat_format": "llama-2",
             "n_ctx": 160},
            {**common, "model": str(models / "tiny-loop.gguf"), "model_alias": "tiny-long", "chat_format": "llama-2",
             "n_ctx": 16384},
        ],
    }  # fmt: skip
    config_path = run.work / "llama.json"
    config_path.write_text(json.dumps(config, indent=1))
    base = f"http://127.0.0.1:{port}"
    proc = run.programs.start("llama-cpp", [str(python), "-m", "llama_cpp.server", "--config_file", str(config_path)])
    try:
        wait_until(lambda: http_get(f"{base}/v1/models", 5)[0] == 200, proc, 120, "the llama-cpp-python server")
    except Exception as exc:
        tail = run.programs.log("llama-cpp")[-600:].replace("\n", " | ")
        raise RuntimeError(f"{exc}; log: {tail}") from exc
    return base


def llama_checks(run: Run, base: str | None, failure: str) -> None:
    if not run.wanted(LLAMA_CHECKS):
        return
    if base is None:
        run.skip_all(LLAMA_CHECKS, f"setup failed: {failure}")
        return
    try:
        ask = ("ask", "--provider", "openai", "--base-url", base, "--retries", "0", "--timeout", "120")
        # the reference: the same question without koala, not streamed
        status, raw = http_post(
            f"{base}/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        )
        reference = json.loads(raw)["choices"][0]["message"]["content"] if status == 200 else None

        def simple() -> None:
            expect(reference is not None and reference.strip() == LLAMA_REPLY, f"the server answered {raw[:300]!r}")
            expect_exact(run.koala.run(*ask, "-m", "tiny", "hi"), reference or "")

        def records() -> None:
            json_records(run.koala.run(*ask, "-m", "tiny", "--json", "hi"), reference or "", "tiny")

        def two_turns() -> None:
            history = run.tmp("llama.jsonl")
            for prompt in ("my name is Ann", "what is my name?"):
                expect_exact(run.koala.run(*ask, "-m", "tiny", "-H", str(history), prompt), reference or "")
            want = [("user", "my name is Ann"), ("assistant", reference)]
            want += [("user", "what is my name?"), ("assistant", reference)]
            expect(history_lines(history) == want, f"history {history_lines(history)}")

        def batch() -> None:
            done = run.koala.run(
                "batch", "--lines", "--concurrency", "1", "--provider", "openai", "--base-url", base, "-m", "tiny",
                "--retries", "0", stdin="one\ntwo\nthree\n", timeout=120,
            )  # fmt: skip
            results = [json.loads(line) for line in done.stdout.splitlines()]
            expect(
                done.returncode == 0 and [r.get("ok") for r in results] == [True] * 3,
                f"expected 3 ok results; got {outcome(done)}",
            )
            expect(all(r["text"] == reference for r in results), f"texts {[r.get('text') for r in results]}")

        def with_system(model: str) -> Callable[[], None]:
            def check() -> None:
                history = run.tmp(f"{model}.jsonl")
                history.write_text(
                    '{"role": "user", "content": "q1"}\n{"role": "assistant", "content": "a1"}\n', encoding="utf-8"
                )
                done = run.koala.run(*ask, "-m", model, "-H", str(history), "-s", "Answer in one word.", "q2")
                expect_exact(done, reference or "")
                expect(
                    history_lines(history)
                    == [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", reference)],
                    f"history {history_lines(history)}",
                )

            return check

        def length() -> None:
            history = run.tmp("llama-length.jsonl")
            done = run.koala.run(*ask, "-m", "tiny-loop", "--max-tokens", "5", "-H", str(history), "hi")
            expect(
                done.returncode == 0 and done.stdout.split() == (LLAMA_REPLY.split() * 2)[:5],
                f"expected the first five words of the chain and exit 0; got {outcome(done)}",
            )
            expect("length" in done.stderr, f"no notice of finish_reason length on stderr; got {outcome(done)}")

        def full_context() -> None:
            history = run.tmp("llama-full.jsonl")
            done = run.koala.run(*ask, "-m", "tiny-loop", "-H", str(history), "hi")
            words = done.stdout.split()
            expect(
                len(words) > 20 and set(words) <= set(LLAMA_REPLY.split()),
                f"expected the looping words until the context is full; got {outcome(done)}",
            )
            saved = history_lines(history)
            expect(
                done.returncode not in (0, 1) and not saved,
                "the server ended the stream without a finish_reason (or [DONE]); expected a failure and nothing "
                f"saved; got exit {done.returncode}, {len(words)} words on stdout, "
                f"stderr {done.stderr.strip()[:300]!r}, {len(saved)} lines saved",
            )

        def cut() -> None:
            history = run.tmp("llama-cut.jsonl")
            koala = run.koala.start(*ask, "-m", "tiny-long", "-H", str(history), "hi")
            try:
                assert koala.stdout is not None and koala.stderr is not None
                first = read_some(koala.stdout.fileno(), 60)
                expect(bool(first), "no reply text within 60 s")
                # another request: llama-cpp-python (interrupt_requests) stops the running stream
                http_post(
                    f"{base}/v1/chat/completions",
                    {"model": "tiny-long", "max_tokens": 1, "messages": [{"role": "user", "content": "next"}]},
                    timeout=120,
                )
                out, err = koala.communicate(timeout=120)
            finally:
                if koala.poll() is None:
                    os.killpg(koala.pid, signal.SIGKILL)
                    koala.wait(10)
            text = (first + out).decode(errors="replace")
            expect(len(text.split()) < 10000, "the stream was not cut: it ran to the end of the context")
            saved = history_lines(history)
            expect(
                koala.returncode not in (0, 1) and not saved,
                f"the server stopped the reply without a finish_reason; expected a failure and nothing saved; got "
                f"exit {koala.returncode}, {len(text.split())} words on stdout, stderr {err.decode().strip()[:300]!r}, "
                f"{len(saved)} lines saved",
            )

        checks = (
            simple,
            records,
            two_turns,
            batch,
            with_system("tiny"),
            with_system("tiny-strict"),
            length,
            full_context,
            cut,
        )
        for name, fn in zip(LLAMA_CHECKS, checks, strict=True):
            run.check(name, fn)
    except Exception as exc:
        run.skip_all([n for n in LLAMA_CHECKS if n not in dict(run.results)], f"setup failed: {exc}")


# --- versions -----------------------------------------------------------------------------------


def output_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    if done.returncode != 0 or not done.stdout.strip():
        return "not available"
    return done.stdout.strip().splitlines()[0]


def versions(run: Run) -> dict[str, str]:
    dpkg = ["dpkg-query", "-W", "-f=${Version}"]
    litellm_python = str(Path(run.args.litellm).with_name("python"))
    pyver = "import importlib.metadata as m, sys; print(' '.join(m.version(p) for p in sys.argv[1:]))"
    return {
        "koala": output_of([run.args.koala, "--version"]),
        "python": sys.version.split()[0],
        "tinyproxy": output_of([*dpkg, "tinyproxy"]),
        "microsocks": output_of([*dpkg, "microsocks"]),
        "squid": output_of([*dpkg, "squid"]),
        "litellm": output_of([litellm_python, "-c", pyver, "litellm"]),
        "llama-cpp-python": output_of([run.args.llama_python, "-c", pyver, "llama_cpp_python"]),
        "gguf": output_of([str(Path(run.args.models).parent / "gguf-venv/bin/python"), "-c", pyver, "gguf"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    for option in ("--work", "--koala", "--models", "--litellm", "--llama-python", "--only"):
        parser.add_argument(option, default="")
    args = parser.parse_args()
    run = Run(args)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    started = time.monotonic()
    try:
        proxy_checks(run)
        llama, failure = None, ""
        if run.wanted(LLAMA_CHECKS + LITELLM_CHECKS[-1:]):
            try:
                llama = start_llama(run)
            except Exception as exc:
                failure = str(exc)
        litellm_checks(run, llama)
        llama_checks(run, llama, failure)
    finally:
        run.programs.stop_all()
    failed = [name for name, why in run.results if why is not None]
    say(f"\n{len(run.results) - len(failed)} passed, {len(failed)} failed in {time.monotonic() - started:.0f} s")
    say("versions:")
    for name, version in versions(run).items():
        say(f"  {name}: {version}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
