"""Persistent secondary indexes of the SQLite store: join value -> entity ids, one per
(dataset, property path) a hop joins on (Sesam's implicit hop indexes, ``hub/dtl/joins.rst``).

Dataset ``N``'s indexes share one table ``hix_N(path, key, id)`` (primary key ``(path, key, id)``,
plus an index on ``id``); ``path`` is the property path as a JSON list (``["address_id"]``) and
``key`` a typed join key (:mod:`runtime.dtl.joinkeys`: ``1`` and ``1.0`` share one, ``"1"`` does
not). The dataset row lists its index paths (column ``indexes``), so a write to a dataset without
hop indexes costs no statement more.

The index follows the latest written version of every id (``latest_N``): :func:`update` runs in
the transaction of the write that changes it, removes the id's old keys and adds the new
version's; deleted versions and null values have no keys. A lookup reads only committed,
non-deleted latest versions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite
import orjson

from runtime.dtl import paths, values
from runtime.dtl.joinkeys import join_keys
from runtime.store._sqlite_bulk import each, insert_rows

if TYPE_CHECKING:  # the dataset module calls this one on its write path
    from runtime.store._sqlite_datasets import DatasetRow

BUILD_CHUNK = 5000  # latest versions read per statement when an index is built


def table(ds: DatasetRow) -> str:
    return f"hix_{ds.key}"


def rows_of(entity: dict[str, Any], names: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(path, key, id)`` rows of one stored (transit) entity body; none if it is deleted."""
    if entity.get("_deleted") is True:
        return []
    eid = entity["_id"]  # only the values at the paths are decoded, not the whole entity
    return [(name, key, eid) for name in names
            for key in join_keys(values.decode(paths.traverse(entity, _path(name))))]


@functools.lru_cache(maxsize=256)
def _path(name: str) -> list[str]:
    """The property path of an index name (parsed once, not per indexed entity; never mutated)."""
    return orjson.loads(name)


async def update(conn: aiosqlite.Connection, ds: DatasetRow, bodies: Sequence[bytes]) -> None:
    """Move the ids of ``bodies`` (their new latest versions, stored JSON) to their new keys."""
    entities = list({(e := orjson.loads(b))["_id"]: e for b in bodies}.values())  # last per id
    for ids, params in each([e["_id"] for e in entities]):
        await conn.execute(f"DELETE FROM {table(ds)} WHERE id IN (SELECT value FROM {ids})", params)
    rows = [r for e in entities for r in rows_of(e, ds.indexes)]
    await insert_rows(conn, f"INSERT OR IGNORE INTO {table(ds)}(path, key, id)", rows)


async def refresh(conn: aiosqlite.Connection, ds: DatasetRow, ids: Sequence[str]) -> None:
    """Re-index ``ids`` from their latest versions (after a rollback rewrote ``latest_N``)."""
    if not ds.indexes:
        return
    bodies: list[bytes] = []
    for listed, params in each(ids):
        await conn.execute(f"DELETE FROM {table(ds)} WHERE id IN (SELECT value FROM {listed})", params)
        found = await conn.execute_fetchall(
            f"SELECT l.body FROM {listed} j JOIN {ds.latest} x ON x.id = j.value "
            f"JOIN {ds.log} l ON l.off = x.off", params)
        bodies.extend(r[0] for r in found)
    await update(conn, ds, bodies)


async def create(conn: aiosqlite.Connection, ds: DatasetRow, name: str) -> None:
    """Add index ``name`` (a :func:`runtime.dtl.joinkeys.path_name`) to the dataset and build it from the latest
    versions; the caller saves the dataset row (:func:`save_indexes`) in the same transaction.

    A one-property path's plain texts (most join values) are indexed by one statement in SQLite
    (their key is ``s:`` and the text); every other version (numbers, lists, transit values,
    longer paths, a NUL anywhere in the body) goes through :func:`rows_of` in chunks."""
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {table(ds)}(path TEXT NOT NULL, key TEXT NOT NULL, "
                       "id TEXT NOT NULL, PRIMARY KEY(path, key, id)) WITHOUT ROWID")
    await conn.execute(f"CREATE INDEX IF NOT EXISTS {table(ds)}_id ON {table(ds)}(id)")
    ds.indexes = (*ds.indexes, name)
    rest = ""
    if (plain := _plain_text(_path(name))) is not None:
        value, condition = plain
        await conn.execute(f"INSERT OR IGNORE INTO {table(ds)}(path, key, id) SELECT ?, 's:' || {value}, x.id "
                           f"FROM {ds.latest} x JOIN {ds.log} l ON l.off = x.off WHERE x.deleted = 0 AND {condition}",
                           (name,))
        rest = f"AND NOT ({condition})"
    last = ""
    while True:
        found = await conn.execute_fetchall(
            f"SELECT x.id, l.body FROM {ds.latest} x JOIN {ds.log} l ON l.off = x.off "
            f"WHERE x.id > ? AND x.deleted = 0 {rest} ORDER BY x.id LIMIT ?", (last, BUILD_CHUNK))
        rows = list(found)
        if not rows:
            break
        last = rows[-1][0]
        index_rows = [r for _, body in rows for r in rows_of(orjson.loads(body), [name])]
        await insert_rows(conn, f"INSERT OR IGNORE INTO {table(ds)}(path, key, id)", index_rows)
    await save_indexes(conn, ds)


def _plain_text(path: list[str]) -> tuple[str, str] | None:
    """The SQL expression of a stored body's value at ``path`` and the condition that it is a
    text :func:`rows_of` keys as ``s:`` + the text: no list, no transit string (``~``), no NUL
    (SQLite's JSON functions cut it). None for a path SQLite's JSON path syntax might read
    otherwise than DTL (more than one property, or one that is not an ASCII identifier)."""
    if len(path) != 1 or not (path[0].isascii() and path[0].isidentifier()):
        return None
    value = f"(l.body ->> '$.{path[0]}')"
    return value, (f"json_type(l.body, '$.{path[0]}') = 'text' AND substr({value}, 1, 1) != '~' "
                   "AND instr(l.body, CAST('\\u0000' AS BLOB)) = 0")


async def save_indexes(conn: aiosqlite.Connection, ds: DatasetRow) -> None:
    await conn.execute("UPDATE datasets SET indexes = ? WHERE ds = ?",
                       (orjson.dumps(list(ds.indexes)).decode(), ds.key))


# CROSS JOIN keeps the keys the outer loop: left to itself, SQLite's planner searches the index
# by path alone and scans the key list per row (1.1 s instead of 9 ms for 1,000 keys of 7,500 rows)
LOOKUP = ("SELECT h.key, l.body FROM {keys} j CROSS JOIN {hix} h ON h.path = ? AND h.key = j.value "
          "JOIN {latest} x ON x.id = h.id JOIN {log} l ON l.off = x.off "
          "WHERE x.deleted = 0 AND x.off <= ? ORDER BY h.id")


PAGE = ("SELECT l.body FROM {hix} h JOIN {latest} x ON x.id = h.id JOIN {log} l ON l.off = x.off "
        "WHERE h.path = ? AND h.key = ? AND h.id > ? AND x.deleted = 0 AND x.off <= ? ORDER BY h.id LIMIT ?")


def lookup_sql(ds: DatasetRow, keys: str = "json_each(?)") -> str:
    """The look-up statement: parameters (those of ``keys``, a table of the keys: see
    :func:`each`; the path name; the committed offset)."""
    return LOOKUP.format(keys=keys, hix=table(ds), latest=ds.latest, log=ds.log)


async def lookup(conn: aiosqlite.Connection, ds: DatasetRow, name: str,
                 keys: Sequence[str]) -> dict[str, list[bytes]]:
    """Stored bodies per key (ordered by ``_id``) of the committed, non-deleted latest versions
    whose value at path ``name`` has that key: one statement, index searches only."""
    out: dict[str, list[bytes]] = {}
    for listed, params in each(keys):
        rows = await conn.execute_fetchall(lookup_sql(ds, listed), (*params, name, ds.committed))
        for key, body in rows:
            out.setdefault(key, []).append(body)
    return out


async def page(conn: aiosqlite.Connection, ds: DatasetRow, name: str, key: str, after: str | None,
               limit: int) -> list[bytes]:
    """Stored bodies of :func:`lookup` for one key with ``_id`` after ``after``, at most
    ``limit``, by ``_id``: a range of the index's primary key."""
    sql = PAGE.format(hix=table(ds), latest=ds.latest, log=ds.log)
    return [body for (body,) in await conn.execute_fetchall(sql, (name, key, after or "", ds.committed, limit))]
