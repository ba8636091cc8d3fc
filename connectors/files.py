"""The ``file`` source: CSV, JSON array and NDJSON files on the local disk, streamed.

Records are parsed in a worker thread one batch at a time, so memory holds one batch, not the
file. ``_id`` comes from ``primary_key`` (a field or a list of fields joined with ``:``), from
``id_expression`` (a Jinja template over the record), or from the records' own ``_id``. No
continuation: every run reads the whole file (a full run, so deletion tracking applies).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
from pydantic import field_validator, model_validator

from connectors.records import SUFFIX_FORMATS, CsvKeys, Records
from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.entities import Entity
from runtime.templates import Template, check_template


class FileSourceConfig(CsvKeys, SourceConfig):
    """``{"type": "file", "path": "data/x.csv", "primary_key": "code"}``.

    Attributes:
        path: the file; relative paths resolve against the config directory.
        format: ``csv``, ``json`` (an array) or ``ndjson``; unset: from the suffix (.csv, .json,
            .ndjson or .jsonl).
        payload_property: JSON only: dotted path to the array inside the document
            (e.g. ``"3166-1"``); unset: the document is the array.
        primary_key: field name, or list of field names joined with ``:``, that gives ``_id``.
        id_expression: Jinja2 template over the record's fields giving ``_id`` (sandboxed;
            Sesam).
    """

    type: Literal["file"]
    path: str
    format: Literal["csv", "json", "ndjson"] | None = None
    payload_property: str | None = None
    primary_key: str | list[str] | None = None
    id_expression: str | None = None

    @field_validator("id_expression")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "id_expression")

    @model_validator(mode="after")
    def _consistent(self) -> FileSourceConfig:
        if self.primary_key is not None and self.id_expression is not None:
            raise ValueError("set primary_key or id_expression, not both")
        fmt = self.format or SUFFIX_FORMATS.get(Path(self.path).suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {self.path!r} from its suffix; set format")
        if self.payload_property is not None and fmt != "json":
            raise ValueError("payload_property applies only to format json")
        if fmt != "csv" and (keys := self.csv_only_keys_set()):
            raise ValueError(f"{', '.join(keys)} appl{'ies' if len(keys) == 1 else 'y'} only to format csv")
        self.format = fmt  # type: ignore[assignment]
        return self


class FileSource(Source):
    """Streams records of one local file as entities."""

    Config: ClassVar[type[ComponentConfig]] = FileSourceConfig
    config: FileSourceConfig

    async def open(self) -> None:
        c = self.config
        path = Path(c.path) if os.path.isabs(c.path) else Path(self.context.config_dir) / c.path
        template = Template(c.id_expression, "id_expression") if c.id_expression else None
        assert c.format is not None  # set by the config's validator
        self.records = Records(
            str(path), c.format, self.context.run.batch_size, payload_property=c.payload_property,
            primary_key=c.primary_key, template=template, csv_keys=c,
        )

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        batches = self.records.batches()
        try:
            while True:
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    return
                yield batch
        finally:
            batches.close()
