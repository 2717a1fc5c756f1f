"""``koala ask``: one prompt, one streamed reply."""

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import KoalaError, UsageError
from .exits import fail, finish
from .options import Continue, Debug, TurnOptions, check_text, continued, expand_options
from .request import RequestOptions
from .requestlog import Logged, LogOptions
from .runner import run_guarded
from .settings import settings_of
from .stall import StallAware
from .stdio import notice, read_stdin, write_out

if TYPE_CHECKING:
    from ..config import Resolved
    from ..last import Recording
    from ..messages import Message
    from ..output import Writer
    from ..turn import AskOptions, Reply

HELP = """Ask a question and stream the reply to stdout.

The prompt is the PROMPT words joined by spaces. When stdin is not a terminal its text is
read too (trailing newlines removed); with both, stdin comes first, then a blank line, then
the words. The reply is written as it arrives; with --json, as NDJSON records.

\b
Examples:
  echo "hi" | koala ask
  koala ask "Translate to French: good morning"
  cat notes.txt | koala ask "summarise in 3 bullets"
  koala ask -H chat.jsonl "my name is Ann"
  koala ask --json "hi" | jq -j 'select(.type=="chunk").text'
  koala ask --dry-run -H chat.jsonl "what did I say?"
"""


HistoryFile = Annotated[
    Path | None,
    typer.Option("-H", "--history", metavar="FILE", help="JSONL history: read prior turns, append this one."),
]
Files = Annotated[
    list[str] | None,
    typer.Option(
        "-f", "--file", metavar="PATH", help="Put a file's text in the prompt, fenced (repeatable; - is stdin)."
    ),
]
Edit = Annotated[bool, typer.Option("-e", "--edit", help="Edit the prompt in $VISUAL or $EDITOR before sending it.")]
MaxTurns = Annotated[
    int | None, typer.Option("--max-turns", metavar="N", help="Send only the last N turns of the history.")
]
JsonRecords = Annotated[bool, typer.Option("--json", help="Write NDJSON records: start, chunks, done/error.")]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the request that would be sent (secrets masked) and exit.")
]
Stats = Annotated[bool, typer.Option("--stats", help="Print timing and size figures on stderr at the end.")]


@expand_options
def ask(
    ctx: typer.Context,
    prompt: Annotated[list[str] | None, typer.Argument(metavar="PROMPT", show_default=False, hidden=True)] = None,
    turn: TurnOptions = TurnOptions(),
    history: HistoryFile = None,
    continue_: Continue = False,
    files: Files = None,
    edit: Edit = False,
    max_turns: MaxTurns = None,
    json_output: JsonRecords = False,
    dry_run: DryRun = False,
    stats: Stats = False,
    request: RequestOptions = RequestOptions(),
    debug: Debug = False,
) -> None:
    from ..turn import AskOptions

    writer = _reply_writer(json_output)
    settings = settings_of(ctx)
    try:
        if max_turns is not None and max_turns < 0:
            raise UsageError(f"--max-turns must be 0 or more, not {max_turns}")
        history = continued(history, continue_)  # before the prompt is read or edited: nothing typed is lost
        options = AskOptions(
            prompt=_prompt(prompt or [], files or [], edit),
            model=turn.model or "",
            system=turn.system_text(),
            history=history,
            max_turns=max_turns,
            connection=request.resolve(settings, send=not dry_run),
        )
        if dry_run:
            _dry_run(options, json_output, debug)
            return
        log = request.logging.path()
    except KoalaError as exc:
        fail(exc, writer, debug)
    _send(options, settings, json_output=json_output, log=(request.logging, log), stats=stats, debug=debug)


def _send(
    options: "AskOptions",
    settings: "Resolved",
    *,
    json_output: bool,
    log: "tuple[LogOptions, Path | None]",
    stats: bool,
    debug: bool,
) -> None:
    """Ask, stream the reply, keep it as the last conversation (unless -H), log it, exit."""
    from ..turn import ask as run_ask

    remember = bool(settings.value("remember_last"))
    recording = _recording(options) if remember and options.history is None else None
    writer = _reply_writer(json_output, options, recording)
    since = time.time(), time.monotonic()
    outcome = run_guarded(lambda: run_ask(options, writer, notice), final=True)
    logging, path = log
    what = Logged("ask", settings.profile, options.connection, options.model, options.prompt, options.system)
    logging.write_outcome(path, what, outcome, since)
    if recording is not None and (outcome.error is not None or outcome.signal is not None):
        recording.discard()
    finish(outcome, writer, debug)
    if remember:
        _keep_last(recording, options.history)
    if stats:
        notice(stats_line(outcome.value))


def _reply_writer(
    json_output: bool, options: "AskOptions | None" = None, recording: "Recording | None" = None
) -> "Writer":
    """The reply's writer (and the error's, before there is a reply): raw text, or NDJSON
    whose start record echoes the request's options; for a plain ask, kept as the last
    conversation as it arrives."""
    from ..output import JsonWriter, TextWriter

    stdout = sys.stdout.buffer
    tty = stdout.isatty()
    sent = {} if options is None else options.connection.options
    start = {"options": dict(sent)} if sent else None
    writer: Writer = JsonWriter(stdout, sanitize=tty, start=start) if json_output else TextWriter(stdout, sanitize=tty)
    if recording is not None:
        from ..last import RecordingWriter

        writer = RecordingWriter(writer, recording)
    return StallAware(writer)


def _recording(options: "AskOptions") -> "Recording | None":
    """A plain ask's exchange, kept as the last conversation as it arrives (or not at all)."""
    from ..last import Recording, state_dir

    try:
        return Recording(state_dir(os.environ), options.prompt)
    except KoalaError as exc:
        notice(str(exc))
        return None


def _keep_last(recording: "Recording | None", history: Path | None) -> None:
    """After a successful ask: its conversation is the last one (a failure is only a notice)."""
    from ..last import remember, state_dir

    try:
        if recording is not None:
            recording.commit()
        elif history is not None:
            remember(state_dir(os.environ), history)
    except KoalaError as exc:
        notice(str(exc))


def _prompt(arguments: list[str], files: list[str], edit: bool) -> str:
    """stdin (when it is not a terminal), each -f file fenced, then the words, a blank line
    apart; then, with -e, whatever the editor leaves of that."""
    from ..prompt import compose

    words = check_text("the prompt", " ".join(arguments))
    texts = [_file(name) for name in files]
    stdin_text = None if "-" in files else read_stdin()
    if stdin_text is None and not arguments and not files and not edit:
        raise UsageError("no prompt: give it as arguments or on standard input (see 'koala ask --help')")
    prompt = compose(stdin_text, texts, words)
    if edit:
        from .editor import edit as run_editor

        prompt = run_editor(prompt)
    if not prompt.strip():
        raise UsageError("empty prompt: nothing to ask")
    return prompt


def _file(name: str) -> tuple[str, str]:
    """A -f file's heading and text; ``-`` is standard input (never a terminal)."""
    from ..prompt import read_text_file
    from .options import read_file

    heading = check_text("-f", name)  # the file is opened by the bytes given
    if name != "-":
        return heading, read_file(Path(name), "-f")
    stream = sys.stdin
    if stream is None or stream.isatty():
        raise UsageError("-f -: standard input is a terminal (koala never waits for typing)")
    return "(stdin)", read_text_file(stream.buffer.read(), "-f - (standard input)")


def _prior(options: "AskOptions", debug: bool) -> "list[Message]":
    """The history's messages, read in a guarded loop: a held lock is waited for interruptibly."""
    from functools import partial

    from ..history import load_history, waiting
    from ..turn import max_time

    path = options.history
    assert path is not None

    async def read() -> "list[Message]":
        with max_time(options.connection.max_time):
            return await waiting(partial(load_history, path, wait=False), path, notice)

    outcome = run_guarded(read)
    finish(outcome, None, debug)
    prior: list[Message] = outcome.value
    return prior


def stats_line(reply: "Reply") -> str:
    """Time to first chunk, total time, chunks, characters, characters per second, and why the
    reply ended when the server said so."""
    first = "-" if reply.first_chunk_s is None else f"{reply.first_chunk_s * 1000:.0f} ms"
    rate = reply.chars_per_s or 0.0
    finish = f", finish_reason {reply.finish_reason}" if reply.finish_reason else ""
    finish += _usage_text(reply.usage)
    return (
        f"stats: first chunk {first}, total {reply.elapsed_s * 1000:.0f} ms, {reply.chunks} chunks, "
        f"{reply.chars} chars, {rate:.0f} chars/s{finish}"
    )


def _usage_text(usage: object) -> str:
    """Token usage as the server reported it (``prompt + completion = total``), or nothing."""
    if not isinstance(usage, dict):
        return ""
    counts = [usage.get(key, "?") for key in ("prompt_tokens", "completion_tokens", "total_tokens")]
    return ", usage: {} prompt + {} completion = {} tokens".format(*counts)


def _dry_run(options: "AskOptions", json_output: bool, debug: bool) -> None:
    """The exact request, secrets masked, without any network."""
    import json

    from ..text import mask_secrets, mask_url
    from ..turn import conversation

    prior = _prior(options, debug) if options.history is not None else []
    messages = conversation(prior, options.system, options.prompt, options.max_turns)
    link = options.connection
    spec = link.provider.request_spec(
        options.model,
        messages,
        base_url=link.base_url,
        web_search=link.web_search,
        api_key=link.api_key,
        options=link.options,
    )
    url = mask_url(spec.url)
    headers = {
        name: "Bearer ***" if name.lower() == "authorization" else mask_secrets(value)
        for name, value in spec.headers.items()
    }
    if json_output:
        record = {"method": spec.method, "url": url, "headers": headers, "body": spec.body}
        write_out(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        return
    lines = [f"{spec.method} {url}", *(f"{name}: {value}" for name, value in headers.items()), ""]
    write_out("\n".join(lines) + "\n" + json.dumps(spec.body, ensure_ascii=False, indent=2) + "\n")
