"""Sampling options for OpenAI-compatible servers (``--temperature`` ... ``-o KEY=VALUE``),
merged over the config file's ``options`` (the request fields are built by
``koala_cli.sampling``)."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..config import Resolved

Temperature = Annotated[float | None, typer.Option("--temperature", metavar="F", help="Sampling temperature (openai).")]
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
