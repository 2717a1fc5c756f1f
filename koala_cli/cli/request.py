"""``RequestOptions``: the options every command that asks takes besides its own -- how to
reach the server, sampling, the request log -- declared once, received as one object."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .connection import ConnectionOptions
from .requestlog import LogOptions
from .sampling import SamplingOptions

if TYPE_CHECKING:
    from ..config import Resolved
    from ..turn import Connection


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class RequestOptions:
    """The connection, sampling and request-log options of a command, in that order."""

    connection: ConnectionOptions = ConnectionOptions()
    sampling: SamplingOptions = SamplingOptions()
    logging: LogOptions = LogOptions()

    def resolve(self, settings: "Resolved | None", *, send: bool = True) -> "Connection":
        """The validated ``Connection``, with the sampling options as request fields (see
        ``ConnectionOptions.resolve``)."""
        return self.connection.resolve(settings, send=send, sampling=self.sampling)
