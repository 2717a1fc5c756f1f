"""``koala models``: the models koala knows for a provider."""

from ..errors import KoalaError
from ..providers import load_provider
from .exits import fail
from .options import JsonFlag, Provider
from .settings import NoConfig, Profile
from .stdio import write_out

HELP = """List the models koala knows for a provider; the default is marked.

Other names are passed to the service as given."""


def models(
    provider: Provider = "koala", json_output: JsonFlag = False, profile: Profile = None, no_config: NoConfig = False
) -> None:
    import json

    try:
        chosen = load_provider(provider)
    except KoalaError as exc:
        fail(exc, None, False)
    lines = []
    for name in chosen.models:
        default = name == chosen.default_model
        if json_output:
            record = {"id": name, "default": default, "provider": provider.lower()}
            lines.append(json.dumps(record))
        else:
            lines.append(f"{name} (default)" if default else name)
    write_out("\n".join(lines) + "\n")
