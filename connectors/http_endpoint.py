"""The ``http_endpoint`` source (a JSON push receiver) and sink (a JSON pull publisher) (Sesam).

Both only mark a pipe: the data moves when a client calls the daemon, never on a schedule, so
the pump leaves these pipes alone (``pump_runs = False``).

* **Receiver** — a pipe with ``source: {type: http_endpoint}`` accepts
  ``POST /api/receivers/<pipe>/entities`` (Sesam's JSON push protocol); the posted entities go
  through the pipe's transforms into its sink. Running such a pipe directly fails with a message
  saying so (an empty "full run" would otherwise delete everything it received).
* **Publisher** — a pipe with ``sink: {type: http_endpoint}`` serves
  ``GET /api/publishers/<pipe>/entities?since=&limit=`` (Sesam's JSON pull protocol): entities of
  its source, through its transforms, produced when requested. Run directly, the sink discards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from runtime.components import ComponentConfig, Sink, Source, SourceConfig
from runtime.config.secrets import Secret
from runtime.entities import Entity
from runtime.errors import FatalError
from runtime.store.protocol import WriteResult


class HttpEndpointSourceConfig(SourceConfig):
    """``{"type": "http_endpoint"}``: entities arrive by JSON push.

    Attributes:
        token: an extra bearer token (``$SECRET(name)``) allowed to push to this receiver only,
            besides the daemon's admin tokens.
    """

    type: Literal["http_endpoint"]
    token: Secret | None = None


class HttpEndpointSource(Source):
    """JSON push receiver marker. Continuation flags are fixed false/true/false (Sesam)."""

    Config: ClassVar[type[ComponentConfig]] = HttpEndpointSourceConfig
    supports_since = False
    is_chronological = True
    is_since_comparable = False
    pump_runs: ClassVar[bool] = False

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        raise FatalError(
            "this pipe has an http_endpoint source: its entities arrive by "
            f"POST /api/receivers/{self.context.pipe}/entities on a running `sluice serve`; "
            "it cannot be run. Leave it out of `sluice run --pipe`",
            pipe=self.context.pipe,
        )
        yield []  # pragma: no cover - makes this an async generator


class HttpEndpointSinkConfig(ComponentConfig):
    """``{"type": "http_endpoint"}``: the pipe is a JSON pull publisher.

    Attributes:
        anonymous_read: serve the publisher without a token.
    """

    type: Literal["http_endpoint"]
    anonymous_read: bool = False


class HttpEndpointSink(Sink):
    """JSON pull publisher marker; entities written to it directly are discarded."""

    Config: ClassVar[type[ComponentConfig]] = HttpEndpointSinkConfig
    pump_runs: ClassVar[bool] = False

    async def write(self, entities: list[Entity]) -> WriteResult:
        return WriteResult()
