"""The ``embedded`` source (Sesam): entities written inline in the config.

No continuation: every run is a full run, so deletion tracking removes entities taken out of the
config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.entities import Entity


class EmbeddedSourceConfig(SourceConfig):
    """``{"type": "embedded", "entities": [{"_id": "a", ...}, ...]}``.

    Attributes:
        entities: the entities, each an object with a string ``_id``; every run is full, so an
            entity taken out of the list is deleted by deletion tracking.
    """

    type: Literal["embedded"]
    entities: list[dict[str, Any]]

    @field_validator("entities")
    @classmethod
    def _ids(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bad = [i for i, e in enumerate(value) if not isinstance(e.get("_id"), str)]
        if bad:
            raise ValueError(f"entities {bad[:10]} have no string _id")
        return value


class EmbeddedSource(Source):
    """Yields the configured entities."""

    Config: ClassVar[type[ComponentConfig]] = EmbeddedSourceConfig
    config: EmbeddedSourceConfig

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        size = self.context.run.batch_size
        items = self.config.entities
        for i in range(0, len(items), size):
            yield [dict(e) for e in items[i : i + size]]
