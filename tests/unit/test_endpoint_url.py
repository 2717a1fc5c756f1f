"""The koala provider's endpoint under a base URL: a query string stays after the path
(Azure-style ``?api-version=``), a ``#fragment`` is dropped (it is never sent anyway)."""

from __future__ import annotations

import pytest

from koala_cli.providers.koala import endpoint_url


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("https://koala.sh", "https://koala.sh/api/gpt/"),
        ("https://koala.sh/", "https://koala.sh/api/gpt/"),
        ("http://h:8080/prefix/", "http://h:8080/prefix/api/gpt/"),
        ("http://h/prefix?api-version=2024-10-21", "http://h/prefix/api/gpt/?api-version=2024-10-21"),
        ("http://h/?a=1&b=2", "http://h/api/gpt/?a=1&b=2"),
        ("http://h?a=1", "http://h/api/gpt/?a=1"),
        ("http://h/p#frag", "http://h/p/api/gpt/"),
        ("http://h/p?q=1#frag", "http://h/p/api/gpt/?q=1"),
        ("http://user:pw@h/p?q=1", "http://user:pw@h/p/api/gpt/?q=1"),
    ],
)
def test_endpoint_keeps_the_query_and_drops_the_fragment(base: str, endpoint: str) -> None:
    assert endpoint_url(base) == endpoint
