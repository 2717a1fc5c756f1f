"""koala as a library: iterate ``Koala.create_async_generator`` over a stream, writing nothing.

It collects the chunks and prints one line ``CHUNKS SHA256`` of the reassembled text at the
end -- exactly what ``minimal.py --output none`` does -- so the two are compared like for
like and the result can be checked.

    python bench/library.py --base-url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import anyio

from koala_cli import Koala


async def consume(base_url: str, prompt: str) -> None:
    parts: list[str] = []
    stream = Koala.create_async_generator("gpt-4o-mini", [{"role": "user", "content": prompt}], base_url=base_url)
    async for chunk in stream:
        parts.append(chunk)
    digest = hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()
    sys.stdout.write(f"{len(parts)} {digest}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Iterate Koala.create_async_generator, writing nothing.")
    parser.add_argument("--base-url", required=True, help="server; /api/gpt/ is appended")
    parser.add_argument("--prompt", default="hi")
    args = parser.parse_args(argv)
    anyio.run(consume, args.base_url, args.prompt)


if __name__ == "__main__":
    main()
