"""SSE field names are matched whole, not by prefix (WHATWG: the field name is all before the colon)."""

from __future__ import annotations

import pytest

from koala_cli.errors import NetworkError
from koala_cli.sse import SSEDecoder


def test_an_unterminated_field_that_only_starts_with_data_is_not_a_cut_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: "a"\n\ndatabase: x') == ['"a"']
    decoder.close()  # "database" is an unknown field: nothing was cut off


@pytest.mark.parametrize("tail", [b"data: x", b"data:x", b"data"])
def test_an_unterminated_data_field_is_a_cut_event(tail: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(b'data: "a"\n\n' + tail)
    with pytest.raises(NetworkError):
        decoder.close()
