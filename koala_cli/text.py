"""Text fit for a terminal or a one-line message (stdlib only): secrets masked, controls made inert,
length capped."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "EXCERPT_CHARS",
    "ascii_host_url",
    "clip",
    "excerpt",
    "inert",
    "json_terminal_safe",
    "mask_secrets",
    "mask_url",
    "redact",
    "terminal_safe",
    "url_secrets",
]

EXCERPT_CHARS = 200

_SPACE = re.compile(r"\s+")


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (ending in ``...`` when cut), as a body's
    excerpt is, but otherwise as it is: for a server's header value (a ``Location``, a reason
    phrase) in a one-line message, whose controls ``inert`` or ``terminal_safe`` then show."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """One printable line of at most ``limit`` characters."""
    line = _SPACE.sub(" ", "".join(c if c.isprintable() else " " for c in text[: limit * 4])).strip()
    return clip(line, limit)


def _terminal_table() -> dict[int, str]:
    table = {code: f"^{chr(code + 64)}" for code in range(0x20) if code not in (0x09, 0x0A)}
    table[0x7F] = "^?"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
    return table


_TERMINAL_SAFE = _terminal_table()


def terminal_safe(text: str) -> str:
    """Show control characters (ESC, CR, C1, ...) as inert text, keeping newlines and tabs.

    The model's text is untrusted: on a terminal it must not move the cursor, retitle the
    window or hide what it printed.
    """
    return text.translate(_TERMINAL_SAFE)


# DEL and C1 controls are legal raw in JSON but act on a terminal: escape them there.
_JSON_TERMINAL_SAFE = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def json_terminal_safe(text: str) -> str:
    """JSON text with DEL and C1 controls escaped: still the same JSON, inert on a terminal."""
    return text.translate(_JSON_TERMINAL_SAFE)


# --- secrets in URLs ---------------------------------------------------------------------------

_SCHEME = re.compile(r"(?i)[a-z][a-z0-9+.-]*://")  # (only ever .match-ed: one start, linear)
# The same scheme found in free text, in linear time: a search for _SCHEME restarts at every
# letter of a run that holds no "://" and reads the run to its end from each (quadratic: 60 kB
# of "a" took most of a minute).  This one starts only where a run of scheme characters starts
# -- and ends where _SCHEME's leftmost match ends, which starts at the run's first letter.
_SCHEME_IN_TEXT = re.compile(r"(?i)(?<![a-z0-9+.-])[0-9+.-]*+[a-z][a-z0-9+.-]*+://")
_HOST_PORT = re.compile(r"(?:\[[^\]\s]*\]|[^:@\s\[\]]*)(?::\d*)?")
_AUTHORITY_END = re.compile(r"[/?#]")


def _userinfo_end(text: str, start: int = 0, end: int | None = None, last_at: int | None = None) -> int:
    """Where the user-info of the URL ``text[start:end]`` (after its ``scheme://``) ends: the
    index in ``text`` of its ``@``, or -1 for none.  ``last_at``: the index of the last ``@``
    of ``text[:end]`` if known (-1 for none), which spares reading the rest of the URL again.

    As httpx parses it: the authority runs to the first ``/``, ``?`` or ``#`` and its user-info
    to the LAST ``@`` in it.  When what precedes that ``/``, ``?`` or ``#`` is no ``host[:port]``,
    the password itself held one of them (httpx refuses such a URL), so the user-info runs to
    the last ``@`` of the whole URL: a password is masked whole, never cut where it looks odd.

    Reads only the authority (slices nothing), so that masking many URLs in one token of a
    text, each ending where the token ends, stays linear.
    """
    end = len(text) if end is None else end
    found = _AUTHORITY_END.search(text, start, end)
    authority_end = found.start() if found else end
    at = text.rfind("@", start, authority_end)
    if authority_end < end and not _HOST_PORT.fullmatch(text, max(at + 1, start), authority_end):
        if last_at is None:
            return text.rfind("@", start, end)
        return last_at if last_at >= start else -1
    return at


# query parameters that carry a credential (Google's ?key=, signed URLs' sig=, tokens)
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:api[_-]?key|key|(?:access[_-]?|refresh[_-]?)?token|auth|password|passwd|pwd|secret|sig|signature)=)"
    r"[^&#;\s'\"]+"
)


def mask_url(url: str) -> str:
    """One URL (an option's value) with its user-info, whatever it holds, and the values of
    query parameters such as ``key=`` or ``token=`` shown as ``***``."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = _userinfo_end(url, start)
    masked = url if at < 0 else f"{url[:start]}***{url[at:]}"
    return _SECRET_PARAM.sub(r"\1***", masked)


def url_secrets(url: str) -> list[str]:
    """The user-info of a URL, its password and its credential-like query values, as given and
    as they may be quoted or encoded."""
    from urllib.parse import quote, unquote

    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = _userinfo_end(url, start)
    found = {match.group(0).partition("=")[2] for match in _SECRET_PARAM.finditer(url)}
    if at >= 0:
        userinfo = url[start:at]
        found |= {userinfo, userinfo.partition(":")[2]}
    for value in list(found):
        quoted = (
            quote(value, safe=":", errors="surrogateescape"),
            quote(unquote(value), safe=":", errors="surrogateescape"),
        )
        found |= {unquote(value), *quoted, repr(value)[1:-1]}  # (surrogates: undecoded bytes of a C locale)
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


_TOKEN_END = re.compile(r"[\s'\"<>]")


def mask_secrets(text: str) -> str:
    """Hide the user-info of every URL in a message (up to its end: whitespace or a quote),
    and the values of credential-like query parameters.  Linear in the length of ``text``,
    whatever it holds (it runs on every error line, which may carry a server's words)."""
    out: list[str] = []
    done = 0
    token_end = last_at = -1  # the end of the token of the last URL, and its last "@"
    for scheme in _SCHEME_IN_TEXT.finditer(text):
        start = scheme.end()
        if start <= done:
            continue
        if start > token_end:  # a new token: find its end and last "@" once for all its URLs
            found = _TOKEN_END.search(text, start)
            token_end = found.start() if found else len(text)
            last_at = text.rfind("@", start, token_end)
        at = _userinfo_end(text, start, token_end, last_at)
        if at >= 0:
            out.append(text[done:start] + "***")
            done = at
    out.append(text[done:])
    return _SECRET_PARAM.sub(r"\1***", "".join(out))


MIN_SECRET = 4  # shorter fragments are not searched for in messages (they would hide too much)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every known secret (a key, a password) replaced by ``***``."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, "***")
    return text


# --- one inert line ---------------------------------------------------------------------------


def _inert_table() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}
    table.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
    # invisible reorderings and separators: a message must read as it is
    for code in (0x2028, 0x2029, 0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[code] = f"\\u{code:04x}"
    return table


_INERT = _inert_table()


def inert(text: str) -> str:
    """One line for stderr whatever ``text`` holds: control characters (C0, DEL, C1), line
    separators and bidirectional overrides shown escaped, so a server's words cannot move the
    cursor, retitle the terminal or reorder what is shown."""
    return text.translate(_INERT)


# --- internationalised host names -------------------------------------------------------------


def ascii_host_url(url: str) -> str:
    """``url`` with a non-ASCII host name in its IDNA (punycode) form, as httpx would send it,
    so headers built from it (``Origin``, ``Referer``) are ASCII too.  ``ValueError`` for a
    name that has none."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.isascii():
        return url
    host, colon, port = hostport.partition(":")  # a non-ASCII host is no IPv6 literal
    import idna  # what httpx encodes host names with (IDNA 2008); it comes with httpx

    try:
        encoded = idna.encode(host.lower()).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"the host name cannot be written in ASCII (IDNA): {exc}") from None
    netloc = f"{userinfo}{at}{encoded}{colon}{port}"
    return urlunsplit(parts._replace(netloc=netloc))
