"""The one place where httpx's errors become koala's (see ``errors``), and which of them a
retry may mend.

Not retried, because a retry cannot help: a TLS certificate koala cannot trust, a host name
that does not exist, a proxy's refusal (407, or squid's 403), an unusable proxy URL.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterator

import httpx

from .errors import KoalaError, NetworkError, ProtocolError, ServiceError, TimeoutError, UsageError
from .text import clip, mask_secrets, mask_url, terminal_safe

__all__ = ["TRUST_HINT", "proxy_refusal", "redact", "retryable", "translate_error"]

# httpx's errors, most specific first, and what each becomes.
_TRANSLATIONS: tuple[tuple[type[httpx.HTTPError], type[KoalaError], str], ...] = (
    (httpx.ConnectTimeout, TimeoutError, "timed out connecting to {host} after {timeout:g} s"),
    (httpx.ReadTimeout, TimeoutError, "no data from {host} for {timeout:g} s {where}"),
    (httpx.TimeoutException, TimeoutError, "timed out talking to {host} after {timeout:g} s"),
    (httpx.ProxyError, NetworkError, "proxy error: {reason}"),
    (httpx.ConnectError, NetworkError, "cannot connect to {host}: {reason}"),
    (httpx.UnsupportedProtocol, UsageError, "unsupported URL: {reason}"),
    (httpx.DecodingError, ProtocolError, "cannot decode the answer from {host}: {reason}"),
    (httpx.LocalProtocolError, ProtocolError, "cannot send the request to {host}: {reason}"),
)

TRUST_HINT = "to trust a private CA, point SSL_CERT_FILE or SSL_CERT_DIR at it"
_NO_SUCH_NAME = frozenset(
    code for code in (getattr(socket, name, None) for name in ("EAI_NONAME", "EAI_NODATA")) if code is not None
)
_STATUS = re.compile(r"(\d{3})\b")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it came from: causes, contexts and the members of exception groups."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 64:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _refused_by_proxy(exc: httpx.HTTPError) -> bool:
    """A tunnel the proxy refused with a 4xx status (407: credentials; 403: its rules)."""
    status = _STATUS.match(str(exc)) if isinstance(exc, httpx.ProxyError) else None
    return status is not None and 400 <= int(status[1]) < 500


def _why(exc: httpx.HTTPError, host: str) -> tuple[str, bool] | None:
    """A message for failures that a retry cannot mend, or that httpx words badly, and
    whether a retry may help; None when the generic translation says it well."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            what = cause.verify_message or cause.reason or str(cause)
            return f"cannot verify the TLS certificate of {host}: {terminal_safe(str(what))} ({TRUST_HINT})", False
        if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME:
            return f"cannot connect to {host}: no such host ({cause.strerror})", False
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            return f"cannot connect to {host}: {cause.strerror} (the limit on open files)", True
    if isinstance(exc, httpx.ConnectError) and "All connection attempts failed" in str(exc):
        for cause in _causes(exc):
            if isinstance(cause, OSError) and cause.strerror:
                return f"cannot connect to {host}: {cause.strerror}", True
    return None


def translate_error(
    exc: httpx.HTTPError, host: str, timeout: float, *, mid_reply: bool = False, proxy: str | None = None
) -> KoalaError:
    """The one place where httpx's errors become koala's."""
    reason = terminal_safe(mask_secrets(str(exc))) or type(exc).__name__
    if isinstance(exc, httpx.ProxyError) and not mid_reply:
        named = f"proxy {mask_url(proxy)}" if proxy else "the proxy"
        verb = "refused" if _refused_by_proxy(exc) else "failed"
        return NetworkError(f"{named} {verb}: {reason}")
    special = None if mid_reply else _why(exc, host)
    if special is not None:
        return NetworkError(special[0])
    where = "in the middle of the reply" if mid_reply else "waiting for the reply"
    for kind, error, message in _TRANSLATIONS:
        if isinstance(exc, kind):
            return error(message.format(host=host, timeout=timeout, reason=reason, where=where))
    if mid_reply:
        return NetworkError(f"connection to {host} dropped in the middle of the reply: {reason}")
    return NetworkError(f"connection to {host} failed: {reason}")


def retryable(exc: httpx.HTTPError, host: str) -> bool:
    if not isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return False
    if _refused_by_proxy(exc):
        return False
    special = _why(exc, host)
    return special is None or special[1]


def redact(error: KoalaError, secret: str | None) -> None:
    """A server may echo the key it refused ("invalid key sk-..."): never pass it on."""
    if not secret:
        return
    error.args = tuple(arg.replace(secret, "***") if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, ServiceError):
        error.excerpt = error.excerpt.replace(secret, "***")


_PROXY_SOFTWARE = re.compile(r"(?i)proxy|squid")


def proxy_refusal(response: httpx.Response, proxy: str | None) -> NetworkError | None:
    """An answer a forward proxy wrote itself instead of passing the server's on: a 407 (only
    a proxy sends it); while going through one, squid's error page (``X-Squid-Error``), or an
    error whose ``Server`` is proxy software and that has no ``Via`` -- a proxy marks what it
    passes on with ``Via`` (tinyproxy's own 403 has none)."""
    status = response.status_code
    headers = response.headers
    squid = headers.get("x-squid-error", "") if proxy else ""
    own = bool(proxy) and "via" not in headers and bool(_PROXY_SOFTWARE.search(headers.get("server", "")))
    if status != 407 and not squid and not (own and status >= 400):
        return None
    named = f"proxy {mask_url(proxy)}" if proxy else "the proxy"
    verb = "refused" if 400 <= status < 500 else "failed"
    # the proxy's words, cut as a body's excerpt is, so that the line stays one short line
    code = f" ({terminal_safe(clip(squid.split()[0]))})" if squid.split() else ""
    answered = terminal_safe(f"{status} {clip(response.reason_phrase)}".rstrip())
    return NetworkError(f"{named} {verb}: {answered}{code}")
