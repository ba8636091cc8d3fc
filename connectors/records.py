"""Records of one local file (CSV, JSON array, NDJSON; optionally gzip-compressed), parsed one
batch at a time with their ``_id``: the parsing the ``file`` and ``files`` sources share.

:class:`Records` is synchronous (run it in a worker thread); memory holds one batch, never the
file. Errors are :class:`BadDataError` naming the file (its ``name``) and the line (CSV, NDJSON) or
the record number (JSON).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import math
import re
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any, BinaryIO, Literal

import ijson
import orjson
from pydantic import BaseModel, Field, field_validator, model_validator

from runtime.components import Chunk
from runtime.entities import Entity
from runtime.errors import BadDataError
from runtime.templates import Template

SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def format_of(path: str) -> str | None:
    """The format a file name's suffix tells (``.csv``, ``.json``, ``.ndjson``/``.jsonl``; a
    ``.gz`` after it is looked through), None when it tells none."""
    name = path.lower().removesuffix(".gz")
    for suffix, fmt in SUFFIX_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def known_encoding(value: str) -> str:
    """``value`` when Python knows the text encoding.

    Raises:
        ValueError: it does not.
    """
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown text encoding {value!r}") from None
    return value


ColumnType = Literal["string", "integer", "number", "boolean"]
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _integer(text: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise ValueError
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError  # stored JSON holds 64-bit integers
    return value


def _number(text: str) -> float:
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError  # also NaN and infinities, which JSON cannot hold
    value = float(text)
    if not math.isfinite(value):
        raise ValueError  # 1e999 overflows to infinity
    return value


def _boolean(text: str) -> bool:
    return _BOOLEANS[text.strip().lower()]  # KeyError: not a boolean


_CONVERTERS: dict[str, Callable[[str], Any]] = {"integer": _integer, "number": _number, "boolean": _boolean}
CSV_ONLY = ("missing_fields", "has_header", "field_names", "column_types")
"""The keys that apply to CSV files only (a source whose format is another refuses them)."""


class CsvKeys(BaseModel):
    """The CSV keys the ``file`` and ``files`` sources share.

    Attributes:
        delimiter: CSV field delimiter (one character).
        quotechar: CSV quote character (one character).
        encoding: text encoding of CSV files (JSON and NDJSON are read as UTF-8).
        missing_fields: CSV only: a row with fewer fields than the header is malformed
            (``fail``: the file and line are named), or its missing fields are null (``null``).
        has_header: CSV only: the first line names the columns (Sesam's ``has_header``); false:
            every line is a record, its columns named by ``field_names``.
        field_names: CSV only: the column names, in order (Sesam's ``field_names``); required
            when ``has_header`` is false. With a header, the header must be exactly these names,
            else the file is malformed: a renamed, added or reordered column fails the file
            instead of filling the wrong properties.
        column_types: CSV only: ``{column: "integer" | "number" | "boolean" | "string"}``; other
            columns stay strings. An empty cell of a typed column is null; a cell not of its
            type, or a typed column the header lacks, makes the file malformed (file, line and
            column named). ``boolean``: ``true``/``false``, ``1``/``0``, ``yes``/``no``, any case;
            ``number``: a finite decimal number, exponent allowed (a float).
    """

    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    missing_fields: Literal["fail", "null"] = "fail"
    has_header: bool = True
    field_names: list[str] | None = Field(default=None, min_length=1)
    column_types: dict[str, ColumnType] = Field(default_factory=dict)

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return known_encoding(value)

    @model_validator(mode="after")
    def _columns(self) -> CsvKeys:
        names = self.field_names
        if not self.has_header and names is None:
            raise ValueError("has_header: false needs field_names (the columns, in order)")
        if names is not None:
            if len(set(names)) != len(names) or "" in names:
                raise ValueError(f"field_names must be distinct and not empty, got {names}")
            if unknown := sorted(set(self.column_types) - set(names)):
                raise ValueError(f"column_types names {unknown}, which field_names does not list")
        return self

    def csv_only_keys_set(self) -> list[str]:
        """The CSV-only keys this config sets (for a source whose format is not CSV to refuse)."""
        return [k for k in CSV_ONLY if k in self.model_fields_set]


@dataclass
class Records:
    """The records of one file as batches of entities.

    Attributes:
        path: the local file to read.
        name: how errors name it (``sftp-drop:/in/a.csv``); defaults to ``path``.
        format: ``csv``, ``json`` (an array, streamed) or ``ndjson``.
        batch_size: records per batch.
        gzip: the file is gzip-compressed (decompressed while it is read).
        payload_property, primary_key, template: as the sources' keys of the same names
            (``template``: the compiled ``id_expression``).
        csv_keys: the CSV keys (:class:`CsvKeys`; a source's config is one).
        variables: extra template variables for ``id_expression`` (the ``files`` source's
            ``file``).
    """

    path: str
    format: Literal["csv", "json", "ndjson"]
    batch_size: int
    name: str = ""
    gzip: bool = False
    payload_property: str | None = None
    primary_key: str | list[str] | None = None
    template: Template | None = None
    csv_keys: CsvKeys = field(default_factory=CsvKeys)
    variables: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.name = self.name or str(self.path)

    def _open(self) -> BinaryIO:
        if self.gzip:
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb")

    def _open_text(self) -> IO[str]:
        if self.gzip:
            return gzip.open(self.path, "rt", newline="", encoding=self.csv_keys.encoding)
        return open(self.path, newline="", encoding=self.csv_keys.encoding)

    def _where(self, n: int) -> str:
        """The location of record ``n`` for errors: ``path:line`` (CSV, NDJSON) or ``path record n``."""
        return f"{self.name} record {n}" if self.format == "json" else f"{self.name}:{n}"

    def batches(self) -> Generator[list[Entity], None, None]:
        """Blocks of up to ``batch_size`` records, each given its ``_id`` (a :class:`Chunk` with
        the bytes read when the format tells them)."""
        for numbers, records, nbytes in self._blocks():
            for n, record in zip(numbers, records, strict=True):
                if record.__class__ is not dict:
                    raise BadDataError(f"record is a {type(record).__name__}, not an object", location=self._where(n))
            self._assign_ids(numbers, records)
            yield records if nbytes is None else Chunk(records, nbytes)

    def _assign_ids(self, numbers: Sequence[int], records: list[dict[str, Any]]) -> None:
        c = self
        if c.template is not None:
            template = c.template
            for n, record in zip(numbers, records, strict=True):
                record["_id"] = template.render(self._where(n), **{**(self.variables or {}), **record})
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
        c = self
        try:
            if c.format == "ndjson":
                yield from self._ndjson()
            else:
                size = self.batch_size
                pairs = self._csv() if c.format == "csv" else self._json()
                while block := list(islice(pairs, size)):
                    yield [n for n, _ in block], [r for _, r in block], None
        except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a truncated gzip file
            raise BadDataError(f"cannot read file: {exc}", location=str(self.name)) from exc

    def _csv(self) -> Iterator[tuple[int, Any]]:
        """(line, row) pairs; ``csv.DictReader`` gives a short row's missing fields the value
        None (its ``restval``), an overlong row's extra values under the key None."""
        k = self.csv_keys
        with self._open_text() as fh:
            reader = csv.DictReader(fh, fieldnames=None if k.has_header else k.field_names,
                                    delimiter=k.delimiter, quotechar=k.quotechar)
            fail_short = k.missing_fields == "fail"
            names = "the header" if k.has_header else "field_names"
            try:
                if reader.fieldnames is None:
                    return  # an empty file
                typed = self._check_columns(list(reader.fieldnames))
                for row in reader:
                    if None in row or (fail_short and None in row.values()):
                        header = len(reader.fieldnames or [])
                        fields = header + len(row.get(None) or []) - list(row.values()).count(None)
                        raise BadDataError(
                            f"row has {fields} field{'s' if fields != 1 else ''}, {names} has {header}"
                            + ("" if None in row else "; set missing_fields: null to read the missing ones as null"),
                            location=f"{self.name}:{reader.line_num}",
                        )
                    for column, kind, convert in typed:
                        value = row[column]
                        if value is None or value == "":
                            row[column] = None
                            continue
                        try:
                            row[column] = convert(value)
                        except (ValueError, KeyError):
                            raise BadDataError(f"column {column!r}: {value!r} is not {kind}",
                                               location=f"{self.name}:{reader.line_num}") from None
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as exc:
                raise BadDataError(f"not valid CSV: {exc}", location=f"{self.name}:{reader.line_num}") from exc

    def _check_columns(self, header: list[str]) -> list[tuple[str, str, Callable[[str], Any]]]:
        """Check the header against ``field_names`` and ``column_types``; the typed columns as
        (column, "an integer" | ..., converter).

        Raises:
            BadDataError: the header is not ``field_names``, or lacks a typed column (line 1).
        """
        k = self.csv_keys
        if k.has_header and k.field_names is not None and header != k.field_names:
            raise BadDataError(f"the header is {header}, field_names expects {k.field_names}; a column was "
                               "renamed, added, removed or moved: check the file, or change field_names",
                               location=f"{self.name}:1")
        if missing := sorted(set(k.column_types) - set(header)):
            raise BadDataError(f"column_types names {missing}, which the header {header} does not have",
                               location=f"{self.name}:1")
        articles = {"integer": "a 64-bit integer", "number": "a finite number", "boolean": "a boolean"}
        return [(c, articles[t], _CONVERTERS[t]) for c, t in k.column_types.items() if t != "string"]

    def _ndjson(self) -> Iterator[tuple[Sequence[int], list[Any], int]]:
        """Blocks of lines parsed with one ``orjson.loads`` call; a block that does not parse as
        exactly one value per line is parsed line by line to name the bad line."""
        size = self.batch_size
        first = 1
        with self._open() as fh:
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
                raise BadDataError(f"not valid JSON: {exc}", location=f"{self.name}:{n}") from exc
            numbers.append(n)
        return numbers, records

    def _json(self) -> Iterator[tuple[int, Any]]:
        path = self.payload_property
        with self._open() as fh:
            self._expect_array(fh, path or "")
            fh.seek(0)
            n = 0
            try:
                for n, item in enumerate(ijson.items(fh, f"{path}.item" if path else "item", use_float=True), start=1):
                    yield n, item
            except ijson.JSONError as exc:
                raise BadDataError(f"not valid JSON after record {n}: {exc}", location=str(self.name)) from exc

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
            raise BadDataError(f"not valid JSON: {exc}", location=str(self.name)) from exc
        if found is None:
            return
        if prefix:
            raise BadDataError(
                f"expected a JSON array at payload_property {prefix!r}, found {found}; "
                "check payload_property against the document", location=str(self.name))
        raise BadDataError(
            f"expected a JSON array at the top level, found {found}; set payload_property to the "
            "path of the array inside the document, or fix the file", location=str(self.name))



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
