"""The ``file`` source: CSV, JSON array and NDJSON files on the local disk, streamed.

Records are parsed in a worker thread one batch at a time, so memory holds one batch, not the
file. ``_id`` comes from ``primary_key`` (a field or a list of fields joined with ``:``), from
``id_expression`` (a Jinja template over the record), or from the records' own ``_id``. No
continuation: every run reads the whole file (a full run, so deletion tracking applies).
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import anyio
import ijson
import orjson
from pydantic import field_validator, model_validator

from runtime.components import Chunk, ComponentConfig, Source, SourceConfig
from runtime.entities import Entity
from runtime.errors import BadDataError
from runtime.templates import Template, check_template

SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}


class FileSourceConfig(SourceConfig):
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
        delimiter: CSV field delimiter (one character).
        encoding: text encoding of a CSV file (JSON and NDJSON are read as UTF-8).
        missing_fields: CSV only: a row with fewer fields than the header fails the run naming
            the file and line (``fail``), or its missing fields are null (``null``).
    """

    type: Literal["file"]
    path: str
    format: Literal["csv", "json", "ndjson"] | None = None
    payload_property: str | None = None
    primary_key: str | list[str] | None = None
    id_expression: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    missing_fields: Literal["fail", "null"] = "fail"

    @field_validator("id_expression")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "id_expression")

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FileSourceConfig:
        if self.primary_key is not None and self.id_expression is not None:
            raise ValueError("set primary_key or id_expression, not both")
        fmt = self.format or SUFFIX_FORMATS.get(Path(self.path).suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {self.path!r} from its suffix; set format")
        if self.payload_property is not None and fmt != "json":
            raise ValueError("payload_property applies only to format json")
        if "missing_fields" in self.model_fields_set and fmt != "csv":
            raise ValueError("missing_fields applies only to format csv")
        self.format = fmt  # type: ignore[assignment]
        return self


class FileSource(Source):
    """Streams records of one local file as entities."""

    Config: ClassVar[type[ComponentConfig]] = FileSourceConfig
    config: FileSourceConfig

    async def open(self) -> None:
        c = self.config
        self.path = Path(c.path) if os.path.isabs(c.path) else Path(self.context.config_dir) / c.path
        self.template = Template(c.id_expression, "id_expression") if c.id_expression else None

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        batches = self._batches()
        try:
            while True:
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    return
                yield batch
        finally:
            batches.close()

    def _where(self, n: int) -> str:
        """The location of record ``n`` for errors: ``path:line`` (CSV, NDJSON) or ``path record n``."""
        return f"{self.path} record {n}" if self.config.format == "json" else f"{self.path}:{n}"

    def _batches(self) -> Generator[list[Entity], None, None]:
        """Blocks of up to ``batch_size`` records, each given its ``_id`` (a :class:`Chunk` with
        the bytes read when the format tells them)."""
        for numbers, records, nbytes in self._blocks():
            for n, record in zip(numbers, records, strict=True):
                if record.__class__ is not dict:
                    raise BadDataError(f"record is a {type(record).__name__}, not an object", location=self._where(n))
            self._assign_ids(numbers, records)
            yield records if nbytes is None else Chunk(records, nbytes)

    def _assign_ids(self, numbers: Sequence[int], records: list[dict[str, Any]]) -> None:
        c = self.config
        if self.template is not None:
            for n, record in zip(numbers, records, strict=True):
                record["_id"] = self.template.render(self._where(n), **record)
        elif c.primary_key is not None:
            keys = [c.primary_key] if isinstance(c.primary_key, str) else c.primary_key
            for n, record in zip(numbers, records, strict=True):
                values = [record.get(k) for k in keys]
                if None in values or "" in values:
                    missing = [k for k, v in zip(keys, values, strict=True) if v is None or v == ""]
                    raise BadDataError(
                        f"record has no value for primary_key field(s) {missing}", location=self._where(n)
                    )
                record["_id"] = ":".join(map(str, values))
        else:
            for n, record in zip(numbers, records, strict=True):
                if record.get("_id").__class__ is not str:
                    raise BadDataError(
                        "record has no string _id; set primary_key or id_expression on the source",
                        location=self._where(n),
                    )

    def _blocks(self) -> Iterator[tuple[Sequence[int], list[Any], int | None]]:
        """(line numbers, or record numbers for JSON; records; bytes read or None) per block of
        ``batch_size``."""
        c = self.config
        try:
            if c.format == "ndjson":
                yield from self._ndjson()
            else:
                size = self.context.run.batch_size
                pairs = self._csv() if c.format == "csv" else self._json()
                while block := list(islice(pairs, size)):
                    yield [n for n, _ in block], [r for _, r in block], None
        except OSError as exc:
            raise BadDataError(f"cannot read file: {exc}", location=str(self.path)) from exc

    def _csv(self) -> Iterator[tuple[int, Any]]:
        """(line, row) pairs; ``csv.DictReader`` gives a short row's missing fields the value
        None (its ``restval``), an overlong row's extra values under the key None."""
        with open(self.path, newline="", encoding=self.config.encoding) as fh:
            reader = csv.DictReader(fh, delimiter=self.config.delimiter)
            fail_short = self.config.missing_fields == "fail"
            try:
                for row in reader:
                    if None in row or (fail_short and None in row.values()):
                        header = len(reader.fieldnames or [])
                        fields = header + len(row.get(None) or []) - list(row.values()).count(None)
                        raise BadDataError(
                            f"row has {fields} field{'s' if fields != 1 else ''}, the header has {header}"
                            + ("" if None in row else "; set missing_fields: null to read the missing ones as null"),
                            location=f"{self.path}:{reader.line_num}",
                        )
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as exc:
                raise BadDataError(f"not valid CSV: {exc}", location=f"{self.path}:{reader.line_num}") from exc

    def _ndjson(self) -> Iterator[tuple[Sequence[int], list[Any], int]]:
        """Blocks of lines parsed with one ``orjson.loads`` call; a block that does not parse as
        exactly one value per line is parsed line by line to name the bad line."""
        size = self.context.run.batch_size
        first = 1
        with open(self.path, "rb") as fh:
            while lines := list(islice(fh, size)):
                joined = b",".join(lines)
                try:
                    records = orjson.loads(b"[" + joined + b"]")
                except orjson.JSONDecodeError:
                    records = None
                if records is not None and len(records) == len(lines):
                    yield range(first, first + len(lines)), records, len(joined)
                else:
                    yield *self._ndjson_lines(lines, first), len(joined)
                first += len(lines)

    def _ndjson_lines(self, lines: list[bytes], first: int) -> tuple[list[int], list[Any]]:
        numbers: list[int] = []
        records: list[Any] = []
        for n, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BadDataError(f"not valid JSON: {exc}", location=f"{self.path}:{n}") from exc
            numbers.append(n)
        return numbers, records

    def _json(self) -> Iterator[tuple[int, Any]]:
        path = self.config.payload_property
        with open(self.path, "rb") as fh:
            self._expect_array(fh, path or "")
            fh.seek(0)
            n = 0
            try:
                for n, item in enumerate(ijson.items(fh, f"{path}.item" if path else "item", use_float=True), start=1):
                    yield n, item
            except ijson.JSONError as exc:
                raise BadDataError(f"not valid JSON after record {n}: {exc}", location=str(self.path)) from exc

    def _expect_array(self, fh: BinaryIO, prefix: str) -> None:
        """Check that the value at ``prefix`` (ijson's dotted path; ``""``: the top level) is an
        array, before any record is read: a document of another shape would otherwise read as
        zero records, and a full run over zero records deletes the whole dataset.

        Raises:
            BadDataError: not valid JSON, or the value is missing or not an array (names the file
                and what was found, e.g. ``an object with keys _id, name``).
        """
        try:
            found = _describe_value(ijson.parse(fh, use_float=True), prefix)
        except ijson.JSONError as exc:
            raise BadDataError(f"not valid JSON: {exc}", location=str(self.path)) from exc
        if found is None:
            return
        if prefix:
            raise BadDataError(
                f"expected a JSON array at payload_property {prefix!r}, found {found}; "
                "check payload_property against the document", location=str(self.path))
        raise BadDataError(
            f"expected a JSON array at the top level, found {found}; set payload_property to the "
            "path of the array inside the document, or fix the file", location=str(self.path))


SCALARS = {"string": "a string", "number": "a number", "boolean": "a boolean", "null": "null"}
MAX_KEYS_NAMED = 5


def _describe_value(events: Iterator[tuple[str, str, Any]], prefix: str) -> str | None:
    """None when the first value at ``prefix`` in ijson ``parse`` events is an array, else a
    description of what is there: ``"an object with keys a, b"``, ``"a string"``, ... or
    ``"nothing (no such key)"``. Reads events only as far as needed (the start of an array stops it)."""
    keys: list[str] | None = None  # None: no value at prefix yet
    for path, event, value in events:
        if path != prefix:
            continue
        if event == "start_array":
            return None
        if event in SCALARS:
            return SCALARS[event]
        if event == "start_map":
            keys = []
        elif event == "map_key" and keys is not None:
            keys.append(value)
            if len(keys) > MAX_KEYS_NAMED:
                break
        elif event == "end_map":
            break
    if keys is None:
        return "nothing (no such key)"
    if not keys:
        return "an empty object"
    named = ", ".join(keys[:MAX_KEYS_NAMED]) + (", ..." if len(keys) > MAX_KEYS_NAMED else "")
    return f"an object with keys {named}"
