"""Bulk statements in the SQLite store: a batch's rows or ids as one parameter read by ``json_each``.

Why not ``executemany``: it binds and steps row by row, releasing Python's GIL around each
``sqlite3_step`` and taking it back after. While another thread computes (a transform's
evaluation, the event loop parsing a look-up), every re-acquisition can wait for that thread's
switch interval (5 ms), so a 10,000-row ``executemany`` spends most of its wall time waiting for
the GIL (the convoy effect). One ``INSERT ... SELECT ... FROM json_each(?)`` is one step: the
per-row work runs in SQLite's C code, the GIL released throughout.

SQLite's JSON functions cut a text at NUL (``"a\\u0000b"`` reads as ``"a"``), so a batch holding
one goes row by row instead: :func:`insert_rows` binds each row, :func:`each` lists the values in
``VALUES`` clauses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite
import orjson

MAX_VARS = 30000  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32


def json_param(value: Any) -> str | None:
    """``value`` as JSON text for one ``json_each(?)`` parameter, or None when a text in it holds
    NUL (which SQLite's JSON functions cut): the caller binds those values another way."""
    text = orjson.dumps(value).decode()
    return None if "\\u0000" in text else text


async def insert_rows(conn: aiosqlite.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``head`` (e.g. ``INSERT OR IGNORE INTO t(a, b)``) for each of ``rows`` (tuples of text,
    integers, floats or None, all of one width), then ``tail`` (e.g. an ``ON CONFLICT`` clause).

    One statement over ``json_each``; row by row (``executemany``) when a text holds NUL, which
    SQLite's JSON functions cut.
    """
    if not rows:
        return
    width = len(rows[0])
    payload = json_param(rows)
    if payload is None:
        await conn.executemany(f"{head} VALUES ({', '.join(['?'] * width)}) {tail}", rows)
        return
    columns = ", ".join(f"j.value ->> {i}" for i in range(width))
    await conn.execute(f"{head} SELECT {columns} FROM json_each(?) j WHERE true {tail}", (payload,))


def each(values: Sequence[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``values`` as table expressions of one column, ``value``, each with its parameters, for
    ``... IN (SELECT value FROM {table})`` or ``FROM {table} j``: one ``json_each(?)``; when a value
    holds NUL, ``VALUES`` lists of at most :data:`MAX_VARS` parameters (run the statement per
    table)."""
    payload = json_param(list(values))
    if payload is not None:
        yield "json_each(?)", (payload,)
        return
    for start in range(0, len(values), MAX_VARS):
        part = tuple(values[start:start + MAX_VARS])
        yield f"(SELECT column1 AS value FROM (VALUES {', '.join(['(?)'] * len(part))}))", part
