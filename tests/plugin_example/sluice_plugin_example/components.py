"""The example plugin's components.

* ``example_counter`` source: entities ``{"_id": "n<i>", "n": i, "_updated": i}`` for
  ``i = since+1 .. count``, in chunks of ``chunk_size`` with ``delay_s`` between chunks. It
  supports since and is chronological, so an interrupted run resumes where it stopped.
  ``fail_while_exists: PATH`` makes every read fail with a TransientError while that file exists
  (to exercise retries).
* ``example_stamp`` transform: sets ``field`` to ``value`` on every entity.
* ``example_jsonl`` sink: appends each entity as one JSON line to ``path`` (relative paths
  resolve against the config directory). At-least-once: the base class commits the checkpoint
  after the write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import orjson
from pydantic import Field

from runtime.components import ComponentConfig, Sink, Source, SourceConfig, Transform
from runtime.entities import Entity
from runtime.errors import TransientError
from runtime.store.protocol import WriteResult


class CounterSourceConfig(SourceConfig):
    """``{"type": "example_counter", "count": 10}``.

    Attributes:
        count: the last number counted to.
        chunk_size: entities per yielded chunk.
        delay_s: seconds to wait before each chunk.
        fail_while_exists: a path (relative to the config directory); while that file exists
            every read fails with a TransientError.
    """

    type: Literal["example_counter"]
    count: int = Field(ge=0)
    chunk_size: int = Field(default=100, ge=1)
    delay_s: float = Field(default=0.0, ge=0)
    fail_while_exists: str | None = None


class CounterSource(Source):
    """Counts from since+1 to ``count``."""

    Config: ClassVar[type[ComponentConfig]] = CounterSourceConfig
    supports_since = True
    is_chronological = True
    is_since_comparable = True
    config: CounterSourceConfig

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else Path(self.context.config_dir) / path

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        c = self.config
        if c.fail_while_exists and self._path(c.fail_while_exists).exists():
            raise TransientError(f"example_counter: {c.fail_while_exists} exists; failing on purpose")
        start = (since if isinstance(since, int) else 0) + 1
        for low in range(start, c.count + 1, c.chunk_size):
            high = min(low + c.chunk_size, c.count + 1)
            if c.delay_s:
                await anyio.sleep(c.delay_s)
            yield [{"_id": f"n{i}", "n": i, "_updated": i} for i in range(low, high)]


class StampTransformConfig(ComponentConfig):
    """``{"type": "example_stamp", "field": "stamped", "value": true}``.

    Attributes:
        field: the field set on every entity.
        value: the value it is set to (any JSON value).
    """

    type: Literal["example_stamp"]
    field: str = "stamped"
    value: Any = True


class StampTransform(Transform):
    """Sets one field on every entity."""

    Config: ClassVar[type[ComponentConfig]] = StampTransformConfig
    config: StampTransformConfig

    async def transform(self, entities: list[Entity]) -> list[Entity]:
        return [{**e, self.config.field: self.config.value} for e in entities]


class JsonLinesSinkConfig(ComponentConfig):
    """``{"type": "example_jsonl", "path": "out.jsonl"}``.

    Attributes:
        path: the JSON-lines file appended to; relative paths resolve against the config
            directory.
    """

    type: Literal["example_jsonl"]
    path: str


class JsonLinesSink(Sink):
    """Appends entities to a JSON-lines file."""

    Config: ClassVar[type[ComponentConfig]] = JsonLinesSinkConfig
    config: JsonLinesSinkConfig

    async def write(self, entities: list[Entity]) -> WriteResult:
        path = Path(self.config.path)
        if not path.is_absolute():
            path = Path(self.context.config_dir) / path
        data = b"".join(orjson.dumps(e) + b"\n" for e in entities)
        await anyio.Path(path).parent.mkdir(parents=True, exist_ok=True)
        async with await anyio.open_file(path, "ab") as f:
            await f.write(data)
        return WriteResult(new=len(entities))
