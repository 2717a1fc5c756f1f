"""``koala models``: the models a provider offers -- asked of the server where it can say."""

from typing import TYPE_CHECKING

import typer

from ..errors import KoalaError
from .connection import ConnectionOptions
from .exits import fail, finish
from .options import Debug, JsonFlag, expand_options
from .runner import run_guarded
from .settings import settings_of
from .stdio import notice, write_out

if TYPE_CHECKING:
    from ..turn import Connection

HELP = """List the models of a provider, one a line.

koala.sh cannot be asked: its known models are listed, the default marked (other names are
passed to the service as given). An OpenAI-compatible server (--provider openai) is asked:
GET {base}/models, with the key, within --timeout and --max-time (at most 8 MiB of it is read).
Blank ids are skipped; control characters in an id are shown escaped (--json keeps ids exact)."""


@expand_options
def models(
    ctx: typer.Context,
    json_output: JsonFlag = False,
    connection: ConnectionOptions = ConnectionOptions(),
    debug: Debug = False,
) -> None:
    import json

    from ..text import inert

    try:
        link = connection.resolve(settings_of(ctx))
    except KoalaError as exc:
        fail(exc, None, debug)
    outcome = run_guarded(lambda: _ask_server(link))
    finish(outcome, None, debug)
    names: list[str] = outcome.value
    provider = next(name for name, path in _registry() if path.endswith(f":{link.provider.__name__}"))
    default = link.provider.default_model  # "" where the provider has none: it marks nothing
    lines = []
    for name in names:
        is_default = bool(default) and name == default
        if json_output:
            lines.append(json.dumps({"id": name, "default": is_default, "provider": provider}))
        else:
            shown = inert(name)  # one name a line: a server's CR, LF or ESC in an id cannot add a "model"
            lines.append(f"{shown} (default)" if is_default else shown)
    write_out("".join(line + "\n" for line in lines))


def _registry() -> list[tuple[str, str]]:
    from ..providers import PROVIDERS

    return list(PROVIDERS.items())


async def _ask_server(link: "Connection") -> list[str]:
    """The provider's list; ``--max-time`` bounds it all, retries and their waits included."""
    from ..turn import max_time

    with max_time(link.max_time) as deadline:
        deadline.what = "no model list"
        return await link.provider.list_models(
            link.proxy,
            base_url=link.base_url,
            timeout=link.timeout,
            api_key=link.api_key,
            retries=link.retries,
            on_retry=notice,
        )
