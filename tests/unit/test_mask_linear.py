"""Masking secrets stays linear in the length of its text, whatever the text holds.

``mask_secrets`` runs on every error line, and those lines carry what a server sent (a
``Location``) and what a user typed (``-o``, ``--base-url``): a 60 kB run of letters once cost
36-52 s of CPU in a regular expression that restarted inside it, ignoring ``--max-time``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from koala_cli.text import MIN_SECRET, mask_secrets, mask_url, url_secrets

# --- the same answers as before ----------------------------------------------------------------
# The masking as it was (commit 5bd0e7f), the reference that the linear one must agree with.

_OLD_SCHEME = re.compile(r"(?i)[a-z][a-z0-9+.-]*://")
_OLD_HOST_PORT = re.compile(r"(?:\[[^\]\s]*\]|[^:@\s\[\]]*)(?::\d*)?")
_OLD_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:api[_-]?key|key|(?:access[_-]?|refresh[_-]?)?token|auth|password|passwd|pwd|secret|sig|signature)=)"
    r"[^&#;\s'\"]+"
)
_OLD_TOKEN_END = re.compile(r"[\s'\"<>]")


def _old_userinfo_end(rest: str) -> int:
    authority_end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    at = rest.rfind("@", 0, authority_end)
    if authority_end < len(rest) and not _OLD_HOST_PORT.fullmatch(rest[at + 1 : authority_end]):
        return rest.rfind("@")
    return at


def _old_mask_secrets(text: str) -> str:
    out: list[str] = []
    done = 0
    for scheme in _OLD_SCHEME.finditer(text):
        start = scheme.end()
        if start <= done:
            continue
        end = _OLD_TOKEN_END.search(text, start)
        at = _old_userinfo_end(text[start : end.start() if end else len(text)])
        if at >= 0:
            out.append(text[done:start] + "***")
            done = start + at
    out.append(text[done:])
    return _OLD_SECRET_PARAM.sub(r"\1***", "".join(out))


def _old_mask_url(url: str) -> str:
    scheme = _OLD_SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = _old_userinfo_end(url[start:])
    masked = url if at < 0 else f"{url[:start]}***{url[start + at :]}"
    return _OLD_SECRET_PARAM.sub(r"\1***", masked)


def url_secrets_before(url: str) -> list[str]:
    from urllib.parse import quote, unquote

    scheme = _OLD_SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = _old_userinfo_end(url[start:])
    found = {match.group(0).partition("=")[2] for match in _OLD_SECRET_PARAM.finditer(url)}
    if at >= 0:
        userinfo = url[start : start + at]
        found |= {userinfo, userinfo.partition(":")[2]}
    for value in list(found):
        quoted = (
            quote(value, safe=":", errors="surrogateescape"),
            quote(unquote(value), safe=":", errors="surrogateescape"),
        )
        found |= {unquote(value), *quoted, repr(value)[1:-1]}
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


# the characters that matter to masking, a few that do not, and the letters of "key="
_URLISH = st.text(alphabet="aAbkKeyz19+.-:/@?#&;=[] \t'\"<>%éXK", max_size=40)

# ... and texts made of the pieces of URLs, which random characters seldom put together
_PIECES = ["http://", "A1://", "x-y://", "u:p", "@", "/", "?", "#", "?key=", "&sig=", ":", ":80", "[::1]", "[", "]"]
_URL_PIECES = st.lists(st.sampled_from([*_PIECES, " ", "'", "1", "a", "h"]), max_size=16).map("".join)


@given(_URLISH | _URL_PIECES)
@example("1abc://u:p@h")  # a scheme that starts after digits inside a run
@example("x-1y://u:p@h/ a://b@c z9+.-q://r:s@t")
@example("a://b://c@d/e")
@example("a://:x/@ a://:x/")
@example("http://[::1@h/x http://u@[::1]:8/")
@example("A://u@h?KEY=v&sig=w")
def test_mask_secrets_answers_as_before(text: str) -> None:
    assert mask_secrets(text) == _old_mask_secrets(text)


@given(_URLISH | _URL_PIECES)
@example("1abc://u:p@h")
@example("a://:x/@")
def test_mask_url_answers_as_before(url: str) -> None:
    assert mask_url(url) == _old_mask_url(url)
    assert sorted(url_secrets(url)) == sorted(url_secrets_before(url))


# --- linear time ---------------------------------------------------------------------------------
# Not a timing of the code (speed lives in bench/), but a bound on it that no busy machine can
# reach and the quadratic masking could not meet: each text is 200 kB, on which the quadratic
# version spent minutes of CPU and the linear one spends milliseconds; the bound is 2 s of CPU
# time (the child's own, not the wall clock, so other processes do not count), and the wall
# clock only stops a hung child.  A child process, because a regular expression cannot be
# interrupted once it runs.


def adversarial(n: int) -> dict[str, str]:
    """Texts of about ``n`` characters that made the masking quadratic."""
    return {
        "letters": "a" * n,
        "letters then a scheme": "a" * (n // 2) + "://",
        "letters and digits": "a1" * (n // 2),
        "digits then letters": "1" * (n // 2) + "a" * (n // 2),
        "scheme, letters and @": "x://" + "a" * (n // 2) + "@" + "a" * (n // 2),
        "letters, @, colons and ?key=": ("a" * 97 + "@:?key=") * (n // 104),
        "schemes in one token": "a://" * (n // 4),
        "schemes with no host": "a://:x/" * (n // 7),
        "schemes with no host, then @": "a://:x/" * (n // 7) + "@",
        "at signs": "http://" + "@" * n,
        "colons": "http://" + ":" * n,
        "key params": "?key=" * (n // 5),
        "bracket": "http://[" + "a" * n + "/",
        "upper case": "A" * (n // 2) + "+.-" + "B" * (n // 2),
    }


ADVERSARIAL = adversarial(200_000)

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from koala_cli.text import mask_secrets, mask_url, url_secrets
    text = sys.stdin.read()
    spent = {}
    for name, function in (("mask_secrets", mask_secrets), ("mask_url", mask_url), ("url_secrets", url_secrets)):
        before = time.process_time()
        function(text)
        spent[name] = time.process_time() - before
    print(json.dumps(spent))
    """
)

CPU_BOUND_S = 2.0


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_masking_is_linear_on_adversarial_text(text: str) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], input=text, capture_output=True, text=True, env=env, timeout=120, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("masking 200 kB did not finish in 120 s")
    spent = json.loads(done.stdout)
    assert all(seconds < CPU_BOUND_S for seconds in spent.values()), spent


@pytest.mark.parametrize("text", adversarial(2000).values(), ids=adversarial(2000).keys())
def test_adversarial_text_answers_as_before(text: str) -> None:
    """The same shapes, short enough for the quadratic reference, masked as it masks them."""
    assert mask_secrets(text) == _old_mask_secrets(text)
    assert mask_url(text) == _old_mask_url(text)
    assert sorted(url_secrets(text)) == sorted(url_secrets_before(text))
