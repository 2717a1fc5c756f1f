"""Options shared by the commands, declared once, and how they reach a command.

Options that belong together are dataclasses of Typer options: ``TurnOptions`` (model and
system text) here, ``ConnectionOptions`` (how to reach the server, ``.connection``),
``SamplingOptions`` (``.sampling``) and ``LogOptions`` (``.requestlog``), the last three
bundled as ``RequestOptions`` (``.request``), which every command that asks takes.  A command
takes each group as one parameter, and the ``expand_options`` decorator shows Typer their
fields in that parameter's place, a nested group's in its own (Typer reads ``__signature__``
and calls commands by keyword), so each command receives one object.  Annotations are
objects, not strings: Typer would otherwise evaluate them on every run.  ``check_text`` is
the one check of an argument's text.
"""

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, overload

import typer

from ..errors import UsageError
from .exits import fail

Model = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        metavar="MODEL",
        envvar="KOALA_MODEL",
        help="Model name [default: gpt-4o-mini; openai: none, name one].",
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


def continued(history: Path | None, continue_: bool) -> Path | None:
    """``-c``: the last conversation, as if given with ``-H`` (never with it)."""
    if not continue_:
        return history
    if history is not None:
        raise UsageError("-c continues the last conversation: it cannot be used with -H FILE")
    from ..last import require_last, state_dir

    return require_last(state_dir(os.environ))


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


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class TurnOptions:
    """What every question is asked with: the model, and a system instruction made of a role,
    system files and ``-s`` (see ``system_text``)."""

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
    """A text file named by an option: not UTF-8, missing, unreadable or a device (see
    ``userfile.read_bytes``) is a usage error."""
    from ..prompt import read_text_file
    from ..userfile import read_bytes

    try:
        data = read_bytes(path)
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    return read_text_file(data, str(path))


Command = TypeVar("Command", bound=Callable[..., Any])


def expand_options(command: Command) -> Command:
    """Show Typer the fields of each options-dataclass parameter of ``command`` in its place;
    call ``command`` with the dataclass built from them (an invalid one is a usage error)."""
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for param in inspect.signature(command).parameters.values():
        if is_dataclass(param.annotation):
            groups[param.name] = param.annotation
            params += _options_of(param.annotation)
        else:
            params.append(param)

    @functools.wraps(command)
    def expanded(**kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug", False))
        try:
            for name, group in groups.items():
                kwargs[name] = _built(group, kwargs)
        except UsageError as exc:
            fail(exc, None, debug)
        return command(**kwargs)

    expanded.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    expanded.__annotations__ = {param.name: param.annotation for param in params}
    return expanded  # type: ignore[return-value]


def _options_of(group: Any) -> list[inspect.Parameter]:
    """A group's fields as parameters, each nested group's fields in its place."""
    params: list[inspect.Parameter] = []
    for option in fields(group):
        if is_dataclass(option.type):
            params += _options_of(option.type)
        else:
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
            params.append(inspect.Parameter(option.name, kind, default=option.default, annotation=option.type))
    return params


def _built(group: Any, values: dict[str, Any]) -> Any:
    """The group made of its options' values (taken out of ``values``), nested groups too."""
    return group(
        **{f.name: _built(f.type, values) if is_dataclass(f.type) else values.pop(f.name) for f in fields(group)}
    )


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
