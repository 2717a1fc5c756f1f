"""A server's header values (Location, reason phrase, content type, X-Squid-Error) are cut in
an error line as body text is, so the line stays short whatever the server sends."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from koala_cli.answers import raise_for_status
from koala_cli.errors import KoalaError, ServiceError
from koala_cli.httperrors import proxy_refusal
from koala_cli.text import EXCERPT_CHARS, clip, inert

LONG = 60_000
# the words around a header value in the line: "host answered HTTP 302 Found: a redirect to ..."
SHORT_LINE = 4 * EXCERPT_CHARS


def test_clip_cuts_long_text_and_keeps_the_rest_as_it_is() -> None:
    assert clip("a" * LONG) == "a" * (EXCERPT_CHARS - 3) + "..."
    assert len(clip("a" * LONG)) == EXCERPT_CHARS
    assert clip("a" * EXCERPT_CHARS) == "a" * EXCERPT_CHARS
    assert clip("ab\x1bc", 3) == "..."
    assert clip("ab\x1bcd", 10) == "ab\x1bcd"  # controls stay, for inert() to show escaped
    assert clip("abcdef", 5) == "ab..."


def _response(status: int, headers: dict[str, str], reason: bytes = b"") -> httpx.Response:
    extensions = {"reason_phrase": reason} if reason else {}
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat")
    return httpx.Response(status, headers=headers, content=b"", request=request, extensions=extensions)


def _service_error(response: httpx.Response) -> KoalaError:
    async def main() -> None:
        await raise_for_status(response, "127.0.0.1:9", 1)

    with pytest.raises(ServiceError) as caught:
        anyio.run(main)
    return caught.value


def test_a_60_kB_location_makes_a_short_error_line() -> None:
    where = "/" + "a" * LONG
    message = str(_service_error(_response(302, {"location": where})))
    assert len(message) < SHORT_LINE, len(message)
    assert "a redirect to /aaa" in message and message.endswith("...")


def test_a_secret_in_a_long_location_is_masked_before_it_is_cut() -> None:
    """Masking first: a cut can never leave half a password where the masking misses it."""
    where = "http://bob:" + "s" * LONG + "@host/"
    message = str(_service_error(_response(302, {"location": where})))
    assert "sss" not in message


def test_a_60_kB_reason_phrase_makes_a_short_error_line() -> None:
    message = str(_service_error(_response(400, {}, reason=b"B" * LONG)))
    assert len(message) < SHORT_LINE, len(message)


def test_a_proxys_60_kB_reason_phrase_and_squid_error_make_a_short_error_line() -> None:
    response = _response(407, {"x-squid-error": "E" * LONG + " 0"}, reason=b"R" * LONG)
    refusal = proxy_refusal(response, "http://proxy:3128")
    assert refusal is not None
    message = str(refusal)
    assert len(message) < SHORT_LINE, len(message)
    assert message.startswith("proxy http://proxy:3128 refused: 407 RRR") and "...)" in message


def test_a_proxys_reason_phrase_is_still_shown_escaped() -> None:
    response = _response(407, {}, reason=b"Auth\x1b]0;pwned\x07 please")
    refusal = proxy_refusal(response, None)
    assert refusal is not None
    assert inert(str(refusal)) == str(refusal)
    assert "^[]0;pwned^G please" in str(refusal)


def test_a_60_kB_content_type_makes_a_short_error_line() -> None:
    from koala_cli.answers import _not_a_stream

    message = str(_not_a_stream(_response(200, {"content-type": "text/" + "x" * LONG}), "body"))
    assert len(message) < SHORT_LINE, len(message)


@given(st.text(alphabet="<>/titleTITLE x\n", max_size=40))
@example("<title>a</title><title>b</title>")
@example("<TITLE x>\na</title>")
@example("<title<title>a</title>")
def test_the_html_title_is_the_one_the_old_search_found(body: str) -> None:
    from koala_cli.answers import _title

    found = re.search(r"(?is)<title[^>]*>(.*?)</title>", body)
    assert _title(body) == (found.group(1) if found else None)
