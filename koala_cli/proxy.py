"""Which proxy a request goes through, the way curl decides it (stdlib only).

An explicit proxy (``--proxy``) wins over the environment (``HTTPS_PROXY`` for https targets,
``HTTP_PROXY`` for http, ``ALL_PROXY`` for both); either is skipped for a host that
``NO_PROXY`` names: ``*`` (every host), a domain (``example.com`` or ``.example.com``: that
domain and its subdomains), an IP address or a CIDR range (``10.0.0.0/8``), optionally with a
``:port``.  Entries are separated by commas or white space.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.request
from urllib.parse import urlsplit

__all__ = ["bypasses_proxy", "choose_proxy"]

_WITH_PORT = re.compile(r"(.*[^:\]]|\[.*\]):(\d+)")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (its value) names ``host`` (and ``port``)."""
    host = host.lower().strip("[]").rstrip(".")
    address = _address(host)
    for entry in re.split(r"[,\s]+", no_proxy.strip().lower()):
        if entry == "*":
            return True
        matched = _WITH_PORT.fullmatch(entry) if _address(entry.strip("[]")) is None else None
        if matched is not None:
            if port is None or int(matched[2]) != port:
                continue
            entry = matched[1]
        entry = entry.strip("[]").strip(".")
        if not entry:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == entry or host.endswith("." + entry):
            return True
    return False


def choose_proxy(url: str, explicit: str | None) -> str | None:
    """The proxy URL a request to ``url`` goes through, or None for a direct connection.

    The proxy variables are read from the environment: standard settings that every HTTP
    client honours, as httpx and curl do.
    """
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    chosen = explicit or proxies.get(scheme) or proxies.get("all")
    if not chosen:
        return None
    no_proxy = proxies.get("no", "")
    try:
        port = parts.port
    except ValueError:
        port = None
    if no_proxy and bypasses_proxy(parts.hostname or "", port or {"http": 80, "https": 443}.get(scheme), no_proxy):
        return None
    return chosen if "://" in chosen else f"http://{chosen}"
