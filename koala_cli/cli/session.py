"""A chat session: reading messages (a line, or lines continued with a backslash on a
terminal), the slash commands, and each turn asked, streamed and saved on one client."""

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExitStatus, Interrupted, KoalaError, UsageError
from .exits import fail, finish, tell_writer
from .options import check_text
from .requestlog import Logged, LogOptions
from .runner import Outcome, restore_signals, run_guarded
from .stall import StallAware, abandoned
from .stdio import notice, write_out

if TYPE_CHECKING:
    import httpx

    from ..messages import Message
    from ..output import Writer
    from ..turn import Connection

COMMANDS_HELP = """/help  /model NAME  /system TEXT  /history  /edit [TEXT]  /exit
End a line with \\ to continue it. Ctrl-C stops a reply; Ctrl-D leaves."""


class Session:
    """The state of one chat: the conversation, the model and the system instruction."""

    def __init__(
        self, link: "Connection", prior: "list[Message]", path: Path | None, model: str, system: str | None, debug: bool
    ) -> None:
        self.link = link
        self.messages = prior
        self.path = path
        self.model = model
        self.system = system
        self.debug = debug
        self.remember = False  # make the history the last conversation after its first saved turn
        self.log: tuple[LogOptions, Path | None, str | None] = (LogOptions(), None, None)
        self.pending_key: Callable[[], str | None] | None = None  # an api_key_cmd not run yet
        self.interactive = sys.stdin is not None and sys.stdin.isatty()
        self.failure: int | None = None  # piped: the first failed turn's status is the exit status
        self.line_number = 0
        self.readline = None
        # One event loop and one client for the whole session, so every turn after the first
        # reuses the connection (and TLS session) the previous one left open.
        import asyncio  # the CLI picks the event loop: one for all turns (imported here: start-up)

        self.runner = asyncio.Runner()
        self.client: httpx.AsyncClient | None = None
        if self.interactive:
            try:
                import readline

                self.readline = readline
            except ImportError:  # pragma: no cover - not every Python has it
                pass

    def loop(self) -> int:
        if self.interactive:
            notice(f"chat with {self.link.provider.get_model(self.model)}; /help for commands, Ctrl-D to leave")
        while True:
            try:
                text = self._read()
            except EOFError:
                break
            except KeyboardInterrupt:
                if not self.interactive:  # piped: SIGINT ends the chat, as documented
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one must not cut the line
                    fail(Interrupted(signal.SIGINT), None, self.debug)
                if self.readline is not None and self.readline.get_line_buffer():
                    sys.stderr.write("\n")
                    continue  # Ctrl-C on a half-typed line discards it
                break
            except KoalaError as exc:  # a line that is not UTF-8
                if not self.interactive:
                    fail(exc, None, self.debug)
                notice(f"error: {exc}; not sent")
                continue
            if not text.strip():
                continue
            if text.strip().partition(" ")[0] == "/edit":
                edited = self._edit(text.strip()[len("/edit") :].strip())
                if edited is None:
                    continue
                text = edited
            elif text.startswith("/"):
                if self._command(text.strip()):
                    break
                continue
            status = self._turn(text)
            if status is not None:
                return status
        if self.interactive:
            sys.stderr.write("\n")
        return self.failure or 0

    def _read(self) -> str:
        """One message: a line, continued over lines ending in a backslash on a terminal.

        Piped, each line is one message as it is: a trailing backslash is text, not a
        continuation, so nothing is ever joined or dropped.
        """
        if not self.interactive:
            return self._line("")
        prompt = "> "
        lines: list[str] = []
        while True:
            try:
                line = self._line(prompt)
            except KeyboardInterrupt:
                if not lines or not self.interactive:
                    raise
                sys.stderr.write("\n")
                return ""  # Ctrl-C on a continuation line drops the message, not the chat
            if line.endswith("\\"):
                lines.append(line[:-1])
                prompt = "… "
                continue
            lines.append(line)
            return "\n".join(lines)

    def _line(self, prompt: str) -> str:
        if self.interactive:
            try:
                line = input(prompt)
            except UnicodeDecodeError:
                raise UsageError("the line is not valid UTF-8") from None
            check_text("the line", line)
            return line
        self.line_number += 1
        raw = sys.stdin.buffer.readline()
        if not raw:
            raise EOFError
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError(f"standard input line {self.line_number} is not valid UTF-8") from None

    def _edit(self, text: str) -> str | None:
        """``/edit [TEXT]``: the message from $VISUAL or $EDITOR; None sends nothing."""
        from .editor import edit

        try:
            return edit(text, "/edit")
        except KoalaError as exc:
            notice(f"error: {exc}")
            if not self.interactive and self.failure is None:
                self.failure = exc.exit_status
            return None

    def _command(self, text: str) -> bool:
        """Handle a slash command; True means leave."""
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return True
        if name == "/help":
            sys.stderr.write(COMMANDS_HELP + "\n")
        elif name == "/model":
            if argument:
                self.model = argument
            notice(f"model: {self.link.provider.get_model(self.model)}")
        elif name == "/system":
            self.system = argument or None
            notice(f"system: {self.system}" if self.system else "system instruction cleared")
        elif name == "/history":
            write_out("".join(f"── {m['role']}\n{self._safe(m['content'])}\n\n" for m in self.messages))
        else:
            notice(f"unknown command {name}; /help lists them")
        return False

    def _safe(self, text: str) -> str:
        from ..text import terminal_safe

        return terminal_safe(text) if sys.stdout.isatty() else text

    def _client(self) -> "httpx.AsyncClient":
        """The session's client, made on the first turn (inside the session's event loop)."""
        if self.client is None:
            from ..transport import make_client

            link = self.link
            url = link.provider.endpoint(link.base_url or link.provider.url)
            self.client = make_client(link.proxy, link.timeout, url, max_connections=1)
        return self.client

    def close(self) -> None:
        """Close the session's connection and event loop."""
        try:
            if self.client is not None:
                self.runner.run(self.client.aclose())
        finally:
            self.runner.close()

    def _turn(self, text: str) -> int | None:
        """Ask, stream and save one turn; an exit status when the chat must end, else None.

        The reply's end is written before the turn is appended, all in one guarded run, so a
        turn is saved only when nothing failed, and a held lock is waited for interruptibly.
        """
        from ..output import TextWriter
        from ..turn import Reply, conversation, max_time, save_turn, stream_reply

        messages = conversation(self.messages, self.system, text)
        writer = StallAware(TextWriter(sys.stdout.buffer, sanitize=sys.stdout.isatty()))
        if self.pending_key is not None:  # the key command runs only when a request is really sent
            from dataclasses import replace

            try:
                self.link = replace(self.link, api_key=self.pending_key())
            except KoalaError as exc:
                fail(exc, None, self.debug)
            self.pending_key = None

        async def turn() -> Reply:
            with max_time(self.link.max_time) as deadline:
                reply = await stream_reply(messages, self.model, self.link, writer, notice, client=self._client())
                deadline.what = "the reply was not saved"
                await save_turn(reply, writer, self.path, text, notice)
            return reply

        since = time.time(), time.monotonic()
        outcome = run_guarded(turn, final=True, runner=self.runner)
        logging, log, profile = self.log
        what = Logged("chat", profile, self.link, self.model, text, self.system)
        logging.write_outcome(log, what, outcome, since)
        return self._settle(outcome, writer, text)

    def _settle(self, outcome: "Outcome", writer: "Writer", text: str) -> int | None:
        """After a turn: the conversation grows by it, or the failure is told; an exit status
        when the chat must end."""
        gone = abandoned()
        if gone is not None:  # a signal let a stalled stdout go: no reply can be shown any more
            fail(Interrupted(gone), None, self.debug)
        if outcome.signal is not None:
            tell_writer(writer, "interrupted", ExitStatus.for_signal(outcome.signal))
            if outcome.signal != signal.SIGINT or not self.interactive:
                finish(outcome, None, self.debug)
            restore_signals()  # the chat goes on
            notice("reply stopped; not saved")
            return None
        if isinstance(outcome.error, BrokenPipeError):
            finish(outcome, None, self.debug)
        if outcome.error is not None:
            tell_writer(writer, str(outcome.error), ExitStatus.ERROR)
            assert isinstance(outcome.error, KoalaError)
            notice(f"error: {outcome.error}")
            if not self.interactive and self.failure is None:
                self.failure = outcome.error.exit_status
        else:
            answer = outcome.value.text or ""
            self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
            self._remember()
        late = restore_signals() or outcome.late
        if late is not None and not self.interactive:  # came as the turn ended: the chat ends now
            fail(Interrupted(late), None, self.debug)
        return None

    def _remember(self) -> None:
        """After the first saved turn: the history becomes the last conversation."""
        if self.remember and self.path is not None:
            self.remember = False
            import os

            from ..last import remember, state_dir

            try:
                remember(state_dir(os.environ), self.path)
            except KoalaError as exc:
                notice(str(exc))
