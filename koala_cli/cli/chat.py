"""``koala chat``: an interactive conversation, one streamed reply per turn."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import KoalaError
from .exits import fail, finish
from .options import Continue, Debug, TurnOptions, continued, expand_options
from .request import RequestOptions
from .runner import run_guarded
from .session import Session
from .settings import settings_of
from .stdio import notice

if TYPE_CHECKING:
    from ..messages import Message
    from ..turn import Connection

HELP = """Talk with the service: replies stream as they come.

Enter sends a message; end a line with a backslash to continue it on the next line.
Ctrl-C during a reply stops it and returns to the prompt (the turn is not saved); Ctrl-C or
Ctrl-D at an empty prompt leaves. With -H FILE the conversation continues and extends a JSONL
history exactly as 'koala ask -H' does. With stdin not a terminal, each line is a message,
SIGINT ends the chat (130), and the exit status is that of the first failed turn.

\b
Commands:
  /help          this list
  /model NAME    use another model (without NAME: show the current one)
  /system TEXT   a system instruction for the following turns (without TEXT: clear it)
  /history       show the conversation so far
  /edit [TEXT]   write the message in $VISUAL or $EDITOR (starting from TEXT)
  /exit          leave (also /quit)
"""


@expand_options
def chat(
    ctx: typer.Context,
    history: Annotated[
        Path | None,
        typer.Option("-H", "--history", metavar="FILE", help="JSONL history: continue it and append each turn."),
    ] = None,
    continue_: Continue = False,
    turn: TurnOptions = TurnOptions(),
    request: RequestOptions = RequestOptions(),
    debug: Debug = False,
) -> None:
    settings = settings_of(ctx)
    try:
        history = continued(history, continue_)
        link = request.resolve(settings, send=False)
        pending_key = request.connection.key_command(settings)  # run before the first message is sent
        system = turn.system_text()
        link.provider.get_model(turn.model)  # a provider without a default needs -m before the first turn
        log = request.logging.path()
    except KoalaError as exc:
        fail(exc, None, debug)
    prior = _prior(history, link, debug) if history is not None else []
    session = Session(link, prior, history, turn.model or "", system, debug)
    session.remember = bool(settings.value("remember_last")) and history is not None
    session.log = (request.logging, log, settings.profile)
    session.pending_key = pending_key
    try:
        status = session.loop()
    finally:
        session.close()
    raise typer.Exit(status)


def _prior(path: Path, link: "Connection", debug: bool) -> "list[Message]":
    """The history's messages, read in a guarded loop (a held lock is waited for
    interruptibly), and the file checked to be writable before the first turn."""
    from ..turn import max_time, read_prior

    async def read() -> "list[Message]":
        with max_time(link.max_time):
            return await read_prior(path, notice)

    outcome = run_guarded(read)
    finish(outcome, None, debug)
    prior: list[Message] = outcome.value
    return prior
