"""koala.sh- and OpenAI-protocol endpoints built on independently written server stacks.

Two stacks, each with its own HTTP and SSE code: sse-starlette on uvicorn (its encoder ends
lines with CRLF and writes one event per send) and aiohttp (a raw ``StreamResponse``, chunked
transfer encoding, events cut into small writes at arbitrary byte offsets, also inside a UTF-8
sequence). Both serve the same scenarios, chosen by the request's ``model``, so a test names
what the server does and the stack decides how the bytes look.

A scenario is a list of steps:
    ("text", s)          a reply chunk (koala.sh: ``data: "<JSON string>"``; openai: a delta)
    ("ping",)            an SSE comment ``: ping``
    ("finish", reason)   openai: an empty delta with ``finish_reason`` (koala.sh: nothing)
    ("done",)            ``data: [DONE]``
    ("error", {...})     ``data: {"error": {...}}``
    ("event_error", s)   ``event: error`` with ``data: s``
    ("echo",)            a chunk holding the request's conversation as JSON (see ``conversation``)
An unknown model answers HTTP 404 with an OpenAI-style JSON error.
"""

from __future__ import annotations

import asyncio  # aiohttp runs only on asyncio (a test server, not the library)
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

Step = tuple[Any, ...]
MODELS = ("mock-small", "mock-large")


def conversation(body: dict[str, Any]) -> list[list[str]]:
    """What the server understood: ``[role, content]`` pairs in the order it received them."""
    if "messages" in body:  # openai
        return [[m["role"], m["content"]] for m in body["messages"]]
    turns: list[list[str]] = []
    for asked, answered in zip(body.get("inputHistory", []), body.get("outputHistory", []), strict=False):
        turns += [["user", asked], ["assistant", answered]]
    return [*turns, ["user", body["input"]]]


def _openai_chunk(delta: dict[str, Any], finish: str | None, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-interop",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def events(steps: list[Step], protocol: str, body: dict[str, Any]) -> Iterator[tuple[str | None, str | None, str]]:
    """Each step as ``(event name, data, comment)``, the same for both stacks."""
    model = str(body.get("model"))
    if protocol == "openai" and steps:
        yield None, json.dumps(_openai_chunk({"role": "assistant", "content": ""}, None, model)), ""
    for step in steps:
        kind = step[0]
        if kind == "ping":
            yield None, None, "ping"
        elif kind in ("text", "echo"):
            text = step[1] if kind == "text" else json.dumps(conversation(body))
            if protocol == "openai":
                yield None, json.dumps(_openai_chunk({"content": text}, None, model), ensure_ascii=False), ""
            else:
                yield None, json.dumps(text, ensure_ascii=False), ""
        elif kind == "finish" and protocol == "openai":
            yield None, json.dumps(_openai_chunk({}, step[1], model)), ""
        elif kind == "done":
            yield None, "[DONE]", ""
        elif kind == "error":
            yield None, json.dumps({"error": step[1]}), ""
        elif kind == "event_error":
            yield "error", step[1], ""


class _Scenarios:
    def __init__(self, scenarios: dict[str, list[Step]]) -> None:
        self.scenarios = scenarios
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body)


# --- sse-starlette + uvicorn -------------------------------------------------------------


def starlette_app(scenarios: _Scenarios) -> Any:
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def stream(request: Request, protocol: str) -> Response:
        body = await request.json()
        scenarios.requests.append((request.url.path, body))
        steps = scenarios.scenarios.get(str(body.get("model")))
        if steps is None:
            return JSONResponse({"error": {"message": "no such model", "type": "invalid_request_error"}}, 404)

        async def generate() -> AsyncIterator[ServerSentEvent]:
            for event, data, comment in events(steps, protocol, body):
                yield ServerSentEvent(data=data, event=event, comment=comment or None)

        return EventSourceResponse(generate())  # CRLF line ends, sse-starlette's default

    async def koala(request: Request) -> Response:
        return await stream(request, "koala")

    async def openai(request: Request) -> Response:
        return await stream(request, "openai")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})

    return Starlette(
        routes=[
            Route("/api/gpt/", koala, methods=["POST"]),
            Route("/v1/chat/completions", openai, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


class UvicornServer:
    """sse-starlette on uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, scenarios: dict[str, list[Step]]) -> None:
        import uvicorn

        self.state = _Scenarios(scenarios)
        self._sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(
            starlette_app(self.state), log_level="error", access_log=False, lifespan="off", ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> UvicornServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


# --- aiohttp --------------------------------------------------------------------------------


def _encode(event: str | None, data: str | None, comment: str, sep: str) -> bytes:
    lines = [f": {comment}"] if comment else []
    if event is not None:
        lines.append(f"event: {event}")
    if data is not None:
        lines += [f"data: {line}" for line in data.split("\n")]
    return (sep.join(lines) + sep + sep).encode()


def aiohttp_app(scenarios: _Scenarios, sep: str, piece: int) -> Any:
    from aiohttp import web

    async def stream(request: web.Request, protocol: str) -> web.StreamResponse:
        body = await request.json()
        scenarios.requests.append((request.path, body))
        steps = scenarios.scenarios.get(str(body.get("model")))
        if steps is None:
            return web.json_response(
                {"error": {"message": "no such model", "type": "invalid_request_error"}}, status=404
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for event, data, comment in events(steps, protocol, body):
            raw = _encode(event, data, comment, sep)
            for start in range(0, len(raw), piece):  # small writes, cut anywhere (also inside UTF-8)
                await response.write(raw[start : start + piece])
        await response.write_eof()
        return response

    async def koala(request: web.Request) -> web.StreamResponse:
        return await stream(request, "koala")

    async def openai(request: web.Request) -> web.StreamResponse:
        return await stream(request, "openai")

    async def models(request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})

    app = web.Application()
    app.router.add_post("/api/gpt/", koala)
    app.router.add_post("/v1/chat/completions", openai)
    app.router.add_post("/v1beta/openai/chat/completions", openai)  # Gemini's API root shape
    app.router.add_get("/v1/models", models)
    return app


class AiohttpServer:
    """aiohttp in a thread with its own event loop, on 127.0.0.1 and a free port."""

    def __init__(self, scenarios: dict[str, list[Step]], *, sep: str = "\n", piece: int = 5) -> None:
        from aiohttp import web

        self.state = _Scenarios(scenarios)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(aiohttp_app(self.state, sep, piece), access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> AiohttpServer:
        from aiohttp import web

        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._sock.close()
