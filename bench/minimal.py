"""The floor koala is measured against: the least code that streams a koala.sh reply (httpx + anyio).

It posts the same request body koala does, splits the answer with ``aiter_lines()``,
``json.loads`` the text of every ``data:`` line and, by default, writes and flushes each
chunk to stdout, ending with a newline like ``koala ask`` does.  No retries, no error
translation, no history: nothing but the request.

    python bench/minimal.py --base-url http://127.0.0.1:8080                  # write + flush each chunk
    python bench/minimal.py --base-url http://127.0.0.1:8080 --output noflush  # write each, flush at the end
    python bench/minimal.py --base-url http://127.0.0.1:8080 --output none     # write nothing; print a digest
    python bench/minimal.py --base-url http://127.0.0.1:8080 --openai          # OpenAI's format

With ``--output none`` the chunks are only collected, and one line ``CHUNKS SHA256`` of the
reassembled text is printed at the end, so the result can still be checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import anyio
import httpx

OUTPUTS = ("flush", "noflush", "none")


async def consume(base_url: str, prompt: str, output: str, openai: bool = False) -> None:
    if openai:
        messages = [{"role": "user", "content": prompt}]
        payload: dict[str, object] = {"model": "gpt-4o-mini", "messages": messages, "stream": True}
        url = base_url.rstrip("/") + "/v1/chat/completions"
    else:
        payload = {"input": prompt, "inputHistory": [], "outputHistory": [], "model": "gpt-4o-mini"}
        url = base_url.rstrip("/") + "/api/gpt/"
    stdout = sys.stdout.buffer
    parts: list[str] = []
    ends_with_newline = True
    async with (
        httpx.AsyncClient(timeout=60.0) as client,
        client.stream("POST", url, json=payload, headers={"Accept": "text/event-stream"}) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[6:] if line[5:6] == " " else line[5:]
            if data == "[DONE]":
                break
            text = json.loads(data)
            if openai:
                text = text["choices"][0]["delta"].get("content")
            if not text:
                continue
            if output == "none":
                parts.append(text)
                continue
            stdout.write(text.encode("utf-8"))
            if output == "flush":
                stdout.flush()
            ends_with_newline = text[-1] == "\n"
    if output == "none":
        digest = hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()
        stdout.write(f"{len(parts)} {digest}\n".encode())
    elif not ends_with_newline:
        stdout.write(b"\n")
    stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The minimal httpx + anyio consumer of a koala.sh stream.")
    parser.add_argument("--base-url", required=True, help="server; /api/gpt/ is appended")
    parser.add_argument("--prompt", default="hi")
    parser.add_argument("--output", choices=OUTPUTS, default="flush", help="what to do with each chunk")
    parser.add_argument("--openai", action="store_true", help="an OpenAI chat-completions stream")
    args = parser.parse_args(argv)
    anyio.run(consume, args.base_url, args.prompt, args.output, args.openai)


if __name__ == "__main__":
    main()
