"""Options shared by the commands, declared once, and the one place they are validated.

``TurnOptions`` (model, system) and ``ConnectionOptions`` (how to reach the server) are
dataclasses of Typer options.  A command takes them as one parameter each, and the
``expand_options`` decorator shows Typer their fields in that parameter's place (Typer reads
``__signature__`` and calls commands by keyword), so each command receives one object.
Annotations here are objects, not strings: Typer would otherwise evaluate them on every run.
"""

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload

import typer

from ..errors import UsageError
from .exits import fail
from .settings import NoConfig, Profile

if TYPE_CHECKING:
    from ..config import Resolved
    from ..keys import KeySource
    from ..turn import Connection

Model = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        metavar="MODEL",
        envvar="KOALA_MODEL",
        help="Model name [default: gpt-4o-mini; openai: none, name one].",
        show_default=False,
    ),
]
System = Annotated[
    str | None, typer.Option("-s", "--system", metavar="TEXT", help="System instruction (not saved in the history).")
]
Debug = Annotated[bool, typer.Option("--debug", envvar="KOALA_DEBUG", help="Show a traceback with errors.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON object a line.")]
Continue = Annotated[
    bool,
    typer.Option("-c", "--continue", help="Continue the last conversation (see 'koala history last'; not with -H)."),
]
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
        show_default=False,
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


Temperature = Annotated[
    float | None, typer.Option("--temperature", metavar="F", help="Sampling temperature (openai).", show_default=False)
]
TopP = Annotated[float | None, typer.Option("--top-p", metavar="F", help="Nucleus sampling, 0-1 (openai).")]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens", metavar="N", help="Longest reply, in tokens (openai).")]
Seed = Annotated[int | None, typer.Option("--seed", metavar="N", help="Seed for repeatable sampling (openai).")]
Stop = Annotated[
    list[str] | None, typer.Option("--stop", metavar="TEXT", help="Stop the reply at TEXT (repeatable; openai).")
]
Assignments = Annotated[
    list[str] | None,
    typer.Option(
        "-o",
        "--option",
        metavar="KEY=VALUE",
        help="Any other request field; VALUE as JSON when it parses, else text (repeatable; openai).",
    ),
]

Usage = Annotated[
    bool,
    typer.Option("--usage", help="Ask the server to report token usage (stream_options.include_usage; openai)."),
]


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class SamplingOptions:
    """Sampling options for OpenAI-compatible servers (over the config's ``options``)."""

    temperature: Temperature = None
    top_p: TopP = None
    max_tokens: MaxTokens = None
    seed: Seed = None
    stop: Stop = None
    option: Assignments = None
    usage: Usage = False

    def build(self, settings: "Resolved | None") -> tuple[dict[str, object], dict[str, str]]:
        """The options of a run, and where those from the config file came from."""
        from ..sampling import build_options

        flags = build_options(
            assignments=self.option or (),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            stop=self.stop or (),
        )
        origin: dict[str, str] = {}
        if self.usage:  # only when asked: several hosted services reject the field
            flags["stream_options"] = {**_table(flags.get("stream_options")), "include_usage": True}
            source = None if settings is None else settings.settings.get("stream_usage")
            if source is not None and source.value is True and source.source.startswith("["):
                origin["stream_options"] = f"{source.source} stream_usage"
            else:
                origin["stream_options"] = "--usage"
        setting = None if settings is None else settings.settings.get("options")
        if setting is None or not isinstance(setting.value, dict):
            return flags, origin
        base = {key: value for key, value in setting.value.items() if key not in flags}
        return {**flags, **base}, {**origin, **{key: f"{setting.source} options.{key}" for key in base}}


def _table(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


SystemFile = Annotated[
    list[Path] | None,
    typer.Option("--system-file", metavar="PATH", help="System text from a file (repeatable; after -r, before -s)."),
]
Role = Annotated[
    str | None,
    typer.Option(
        "-r", "--role", metavar="NAME", help="System text from <config dir>/roles/NAME.md (see 'koala roles')."
    ),
]


LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log",
        metavar="FILE",
        envvar="KOALA_LOG",
        help="Append one JSON line per request to FILE (time, model, host, sizes, usage, status).",
        show_default=False,
    ),
]
LogPrompts = Annotated[bool, typer.Option("--log-prompts", help="With --log: include the prompt text.")]


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class LogOptions:
    """The request log (``koala_cli.requestlog``)."""

    log: LogFile = None
    log_prompts: LogPrompts = False

    def path(self) -> Path | None:
        """The log file, checked before any request (a bad one is a usage error)."""
        if self.log is None or not str(self.log):
            return None
        from ..requestlog import check_log

        path = self.log.expanduser()
        check_log(path)
        return path

    def write(
        self,
        path: Path | None,
        *,
        command: str,
        profile: str | None,
        link: "Connection",
        model: str,
        prompt: str,
        system: str | None,
        started: float,
        elapsed_s: float,
        exit_status: int,
        chars_out: int = 0,
        usage: "Mapping[str, object] | None" = None,
    ) -> None:
        """Append one request's line; a log that cannot be written is a notice, not a failure."""
        if path is None:
            return
        from ..errors import KoalaError
        from ..requestlog import append_record, log_record
        from .stdio import notice

        record = log_record(
            time=started,
            command=command,
            profile=profile,
            provider=link.provider.__name__.lower(),
            model=link.provider.get_model(model),
            base_url=link.base_url or link.provider.url,
            chars_in=len(prompt) + len(system or ""),
            chars_out=chars_out,
            usage=usage,
            elapsed_s=elapsed_s,
            exit_status=exit_status,
            prompt=prompt if self.log_prompts else None,
        )
        try:
            append_record(path, record)
        except KoalaError as exc:
            notice(str(exc))


def outcome_status(outcome: Any) -> int:
    """The exit status a guarded run's ``Outcome`` stands for (for the request log)."""
    from ..errors import ExitStatus, KoalaError

    if outcome.signal is not None:
        return int(ExitStatus.for_signal(outcome.signal))
    if isinstance(outcome.error, KoalaError):
        return int(outcome.error.exit_status)
    return int(ExitStatus.SIGPIPE) if outcome.error is not None else 0


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class TurnOptions:
    """What every question is asked with: the model and a system instruction."""

    model: Model = None
    system: System = None
    system_file: SystemFile = None
    role: Role = None

    def __post_init__(self) -> None:
        self.model = check_text("--model", self.model)
        self.system = check_text("--system", self.system)
        check_text("--role", self.role)  # a file name: kept as the bytes given

    def system_text(self) -> str | None:
        """The system text: the role's, then each --system-file's, then -s (or the profile's
        ``system``), a blank line apart; None when there is none."""
        parts = []
        if self.role is not None:
            from ..config import config_dir
            from ..roles import read_role

            parts.append(read_role(config_dir(os.environ) / "roles", self.role))
        for path in self.system_file or ():
            parts.append(read_file(path, "--system-file").strip())
        if self.system:
            parts.append(self.system)
        return "\n\n".join(part for part in parts if part) or None


def read_file(path: Path, option: str) -> str:
    """A text file named by an option: not UTF-8, missing or unreadable is a usage error."""
    from ..prompt import read_text_file

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    return read_text_file(data, str(path))


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
    url = check_text(option, url)
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


Command = TypeVar("Command", bound=Callable[..., Any])


def expand_options(command: Command) -> Command:
    """Show Typer the fields of each options-dataclass parameter of ``command`` in its place;
    call ``command`` with the dataclass built from them (an invalid one is a usage error)."""
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for param in inspect.signature(command).parameters.values():
        if not is_dataclass(param.annotation):
            params.append(param)
            continue
        groups[param.name] = param.annotation
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params += [
            inspect.Parameter(f.name, kind, default=f.default, annotation=f.type) for f in fields(param.annotation)
        ]

    @functools.wraps(command)
    def expanded(**kwargs: Any) -> Any:
        try:
            for name, options in groups.items():
                kwargs[name] = options(**{f.name: kwargs.pop(f.name) for f in fields(options)})
        except UsageError as exc:
            fail(exc, None, kwargs.get("debug", False))
        return command(**kwargs)

    expanded.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    expanded.__annotations__ = {param.name: param.annotation for param in params}
    return expanded  # type: ignore[return-value]


@overload
def check_text(what: str, value: str) -> str: ...
@overload
def check_text(what: str, value: None) -> None: ...
def check_text(what: str, value: str | None) -> str | None:
    """An argument as UTF-8 text.  Python decodes arguments with the locale's encoding and
    surrogate escapes: under a C locale UTF-8 bytes arrive escaped and are decoded here, as
    stdin is; bytes that are not UTF-8 stop here."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None


def positive(option: str, value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option} must be a positive number of seconds, not {value:g}")
    return value
