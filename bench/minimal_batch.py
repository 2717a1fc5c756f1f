"""The floor for ``koala batch``: the least code that runs a JSONL file of jobs on one shared client.

httpx + anyio: one ``AsyncClient`` (its pool limited to the concurrency) shared by every
request, at most ``--concurrency`` requests in flight, jobs started as their lines are read,
each reply read with ``aiter_lines()`` and ``json.loads`` per ``data:`` line, one NDJSON
result a line written as each job completes.  No retries, no ordering, no error handling.

    python bench/minimal_batch.py --base-url https://127.0.0.1:8443 --concurrency 32 jobs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import httpx


async def run(path: str, base_url: str, concurrency: int, openai: bool) -> None:
    url = base_url.rstrip("/") + ("/v1/chat/completions" if openai else "/api/gpt/")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out = sys.stdout.buffer
    slots = anyio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, job: dict[str, object]) -> None:
        try:
            prompt = job["prompt"]
            if openai:
                payload: dict[str, object] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
                payload["stream"] = True
            else:
                payload = {"input": prompt, "inputHistory": [], "outputHistory": [], "model": "gpt-4o-mini"}
            parts: list[str] = []
            async with client.stream("POST", url, json=payload) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[6:] if line[5:6] == " " else line[5:]
                    if data == "[DONE]":
                        continue  # read on to the end of the body: the connection goes back to the pool
                    value = json.loads(data)
                    text = value["choices"][0]["delta"].get("content") if openai else value
                    if text:
                        parts.append(text)
            result = {"id": job["id"], "ok": True, "text": "".join(parts)}
            out.write(json.dumps(result, ensure_ascii=False).encode("utf-8") + b"\n")
            out.flush()
        finally:
            slots.release()

    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client, anyio.create_task_group() as group:
        with open(path, "rb", buffering=0) as jobs:  # read in a thread: a pipe's lines start as they come
            pending = b""
            while True:
                piece = await anyio.to_thread.run_sync(jobs.read, 1 << 16)
                *lines, pending = (pending + piece).split(b"\n") if piece else [pending, b""]
                for line in lines:
                    if line.strip():
                        await slots.acquire()
                        group.start_soon(one, client, json.loads(line))
                if not piece:
                    break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The minimal httpx + anyio batch client (the floor).")
    parser.add_argument("file", help="JSONL jobs: {id, prompt}")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--openai", action="store_true", help="OpenAI chat completions instead of koala.sh")
    args = parser.parse_args(argv)
    anyio.run(run, args.file, args.base_url, args.concurrency, args.openai)


if __name__ == "__main__":
    main()
