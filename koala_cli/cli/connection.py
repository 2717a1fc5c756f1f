"""How to reach the server: ``ConnectionOptions``, and the checks of a URL and a key.

Every failure here is a usage error (exit 2) raised before anything is sent, and no check
ever shows a credential: URL user-info, credential query values and keys are registered
with ``exits.hide`` first.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from .options import check_text, positive
from .sampling import SamplingOptions
from .settings import NoConfig, Profile

if TYPE_CHECKING:
    from ..config import Resolved
    from ..keys import KeySource
    from ..turn import Connection

Provider = Annotated[
    str,
    typer.Option("--provider", metavar="NAME", envvar="KOALA_PROVIDER", help="koala (koala.sh) or openai-compatible."),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        envvar="KOALA_BASE_URL",
        help="Server to ask [default: https://koala.sh; openai: https://api.openai.com].",
    ),
]
Timeout = Annotated[
    float,
    typer.Option("--timeout", metavar="SECONDS", help="Longest wait to connect or for more of a reply."),
]
MaxTime = Annotated[
    float | None, typer.Option("--max-time", metavar="SECONDS", help="Longest time for a whole reply (default: none).")
]
Retries = Annotated[
    int, typer.Option("--retries", metavar="N", help="Retries before the first byte (429, 502-504, connect errors).")
]
Proxy = Annotated[
    str | None, typer.Option("--proxy", metavar="URL", help="HTTP(S) or SOCKS proxy (HTTPS_PROXY, NO_PROXY honoured).")
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="Send 'Authorization: Bearer KEY' [env: KOALA_API_KEY; openai: OPENAI_API_KEY].",
    ),
]
WebSearch = Annotated[bool, typer.Option("--web-search", help="Let the service search the web (koala.sh only).")]


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class ConnectionOptions:
    """How to reach the server, as given on the command line (or the environment)."""

    provider: Provider = "koala"
    base_url: BaseUrl = None
    timeout: Timeout = 60.0
    max_time: MaxTime = None
    retries: Retries = 3
    proxy: Proxy = None
    api_key: ApiKey = None
    web_search: WebSearch = False
    profile: Profile = None
    no_config: NoConfig = False

    def resolve(
        self, settings: "Resolved | None" = None, *, send: bool = True, sampling: SamplingOptions | None = None
    ) -> "Connection":
        """The validated ``Connection``, its key from the first source that has one (see
        ``koala_cli.keys``); a key command runs only when ``send`` (not for ``--dry-run``)."""
        from ..providers import load_provider
        from ..turn import Connection

        base_url = None if self.base_url is None else check_url("--base-url", self.base_url)
        proxy = None if self.proxy is None else check_url("--proxy", self.proxy)
        check_env_proxies()
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, not {self.retries}")
        chosen = load_provider(self.provider)
        options, origin = sampling.build(settings) if sampling is not None else ({}, {})
        if options and not chosen.takes_options:
            from ..sampling import refuse_options

            refuse_options(options, self.provider.strip().lower(), origin)
        api_key = self._key(chosen.api_key_env, settings, send)
        return Connection(
            provider=chosen,
            base_url=base_url,
            timeout=positive("--timeout", self.timeout),
            max_time=None if self.max_time is None else positive("--max-time", self.max_time),
            proxy=proxy,
            api_key=api_key,
            web_search=self.web_search,
            retries=self.retries,
            options=options,
        )

    def key_command(self, settings: "Resolved | None") -> "Callable[[], str | None] | None":
        """The key command this run would use (to run before its first request), or None."""
        from ..providers import load_provider

        source = self._source(load_provider(self.provider).api_key_env, settings)
        if source.command is None:
            return None
        return lambda: check_key(source.describe, source.get())

    def _key(self, provider_variable: str | None, settings: "Resolved | None", send: bool) -> str | None:
        source = self._source(provider_variable, settings)
        if source.command is not None and not send:
            return "(from api_key_cmd)"  # shown masked; the command runs only for a real request
        return check_key(source.describe, source.get())

    def _source(self, provider_variable: str | None, settings: "Resolved | None") -> "KeySource":
        from ..config import Config, resolve
        from ..keys import choose_key

        return choose_key(
            settings or resolve(Config(), None, {}),
            flag=self.api_key,
            env=os.environ,
            provider_variable=provider_variable,  # each service's own variable, never another's
            provider=self.provider,
            base_url=self.base_url,
        )


def check_key(source: str, key: str | None) -> str | None:
    """A key as sent: surrounding whitespace (the CR of a CRLF ``.env`` file) stripped, then
    printable ASCII or a usage error that names where it came from -- never the key itself."""
    from .exits import hide

    if key is None:
        return None
    hide(key, key.strip())
    key = key.strip()
    if not (key.isascii() and key.isprintable()):
        raise UsageError(f"the API key from {source} must be printable ASCII (it is not shown here)")
    return key or None


def check_url(option: str, url: str) -> str:
    """A URL httpx can use, its host in ASCII (punycode); its credentials are never shown."""
    from urllib.parse import urlsplit

    from ..text import ascii_host_url, mask_url, url_secrets
    from .exits import hide

    hide(*url_secrets(url))
    url = check_text(option, url)  # under a C locale: the text of the bytes given
    hide(*url_secrets(url))
    shown = mask_url(url)
    if option == "--base-url" and not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, not {shown!r}")
    try:
        urlsplit(url).port  # noqa: B018 - parsing is the check: a port above 65535 raises
    except ValueError:  # its message may quote a part of the password
        raise UsageError(
            f"{option} {shown!r} is not a valid URL: a port must be a number up to 65535, and a password"
            " holding '/', '?' or '#' must be percent-encoded"
        ) from None
    try:
        return ascii_host_url(url)
    except ValueError as exc:
        raise UsageError(f"{option} {shown!r}: {exc}") from None


def check_env_proxies() -> None:
    """Proxies from the environment: their credentials are secrets too, and one that httpx
    would use but cannot parse is refused like a bad --proxy, naming its variable."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    from ..text import mask_url, url_secrets
    from .exits import hide

    proxies = getproxies()
    for url in proxies.values():
        hide(*url_secrets(url))
    if "*" in (host.strip() for host in proxies.get("no", "").split(",")):
        return  # httpx uses none of them
    for scheme, url in proxies.items():
        try:
            urlsplit(url).port  # noqa: B018 - parsing is the check
        except ValueError:
            raise UsageError(
                f"{scheme.upper()}_PROXY {mask_url(url)!r} is not a valid URL: a port must be a number up to"
                " 65535, and a password holding '/', '?' or '#' must be percent-encoded"
            ) from None
