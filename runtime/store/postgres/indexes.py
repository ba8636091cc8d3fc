"""Persistent secondary (hop) indexes of the PostgreSQL store: the semantics of
:mod:`runtime.store._sqlite_indexes` (whose row builder is shared) in one table
``hix(ds, path, key, id)`` for every dataset.

The index follows the latest written version of every id: :func:`update` runs in the
transaction of the write that changes it. A lookup reads only committed, non-deleted latest
versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
import orjson

from runtime.store._sqlite_indexes import BUILD_CHUNK, rows_of

if TYPE_CHECKING:
    from runtime.store._sqlite_datasets import DatasetRow


async def _insert(conn: asyncpg.Connection, ds: DatasetRow, rows: list[tuple[str, str, str]]) -> None:
    if rows:
        paths, keys, ids = zip(*rows, strict=True)
        await conn.execute("INSERT INTO hix(ds, path, key, id) SELECT $1, * FROM "
                           "unnest($2::text[], $3::bytea[], $4::bytea[]) ON CONFLICT DO NOTHING",
                           ds.key, paths, [k.encode() for k in keys], [i.encode() for i in ids])


async def update(conn: asyncpg.Connection, ds: DatasetRow, bodies: Sequence[bytes]) -> None:
    """Move the ids of ``bodies`` (their new latest versions, stored JSON) to their new keys."""
    entities = list({(e := orjson.loads(body))["_id"]: e for body in bodies}.values())  # last per id
    await conn.execute("DELETE FROM hix WHERE ds = $1 AND id = ANY($2::bytea[])",
                       ds.key, [e["_id"].encode() for e in entities])
    await _insert(conn, ds, [r for e in entities for r in rows_of(e, ds.indexes)])


async def refresh(conn: asyncpg.Connection, ds: DatasetRow, ids: Sequence[bytes]) -> None:
    """Re-index ``ids`` (stored bytes) from their latest versions (after a rollback rewrote ``latest``)."""
    if not ds.indexes:
        return
    await conn.execute("DELETE FROM hix WHERE ds = $1 AND id = ANY($2::bytea[])", ds.key, list(ids))
    found = await conn.fetch("SELECT l.body FROM latest x JOIN log l ON l.ds = x.ds AND l.off = x.off "
                             "WHERE x.ds = $1 AND x.id = ANY($2::bytea[])", ds.key, list(ids))
    await update(conn, ds, [r[0] for r in found])


async def create(conn: asyncpg.Connection, ds: DatasetRow, name: str) -> None:
    """Add index ``name`` (a :func:`runtime.store._sqlite_indexes.path_name`) to the dataset, build
    it from the latest versions and save the dataset's index list, in the caller's transaction."""
    ds.indexes = (*ds.indexes, name)
    last = b""
    while True:
        rows = await conn.fetch(
            "SELECT x.id, l.body FROM latest x JOIN log l ON l.ds = x.ds AND l.off = x.off "
            "WHERE x.ds = $1 AND x.id > $2 AND NOT x.deleted ORDER BY x.id LIMIT $3", ds.key, last, BUILD_CHUNK)
        if not rows:
            break
        last = rows[-1][0]
        await _insert(conn, ds, [r for _, body in rows for r in rows_of(orjson.loads(body), [name])])
    await conn.execute("UPDATE datasets SET indexes = $1 WHERE ds = $2",
                       orjson.dumps(list(ds.indexes)).decode(), ds.key)


async def lookup(conn: asyncpg.Connection, ds: DatasetRow, name: str, keys: Sequence[str]) -> dict[str, list[bytes]]:
    """Stored bodies per key (ordered by ``_id``) of the committed, non-deleted latest versions
    whose value at path ``name`` has that key: one statement over the index."""
    rows = await conn.fetch(
        "SELECT h.key, l.body FROM hix h JOIN latest x ON x.ds = h.ds AND x.id = h.id "
        "JOIN log l ON l.ds = x.ds AND l.off = x.off WHERE h.ds = $1 AND h.path = $2 AND h.key = ANY($3::bytea[]) "
        "AND NOT x.deleted AND x.off <= $4 ORDER BY h.id", ds.key, name, [k.encode() for k in keys], ds.committed)
    out: dict[str, list[bytes]] = {}
    for key, body in rows:
        out.setdefault(key.decode(), []).append(body)
    return out


async def page(conn: asyncpg.Connection, ds: DatasetRow, name: str, key: str, after: str | None,
               limit: int) -> list[bytes]:
    """Stored bodies of :func:`lookup` for one key with ``_id`` after ``after``, at most
    ``limit``, by ``_id``: a range of the index's primary key."""
    rows = await conn.fetch(
        "SELECT l.body FROM hix h JOIN latest x ON x.ds = h.ds AND x.id = h.id "
        "JOIN log l ON l.ds = x.ds AND l.off = x.off WHERE h.ds = $1 AND h.path = $2 AND h.key = $3 AND h.id > $4 "
        "AND NOT x.deleted AND x.off <= $5 ORDER BY h.id LIMIT $6",
        ds.key, name, key.encode(), (after or "").encode(), ds.committed, limit)
    return [body for (body,) in rows]
