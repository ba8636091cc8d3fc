"""Dependency tracking in the PostgreSQL store: the semantics of
:mod:`runtime.store._sqlite_tracking` in ``deps(pipe, ds, path, key, src)`` and
``tracking(pipe, ds, off)`` (``ds`` the dataset name, keys and source ids ``bytea``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import asyncpg

from runtime.store._sqlite_datasets import DatasetRow
from runtime.store.protocol import FOUND, Dependency

SCHEMA = """
CREATE TABLE deps(
    pipe text COLLATE "C" NOT NULL, ds text COLLATE "C" NOT NULL, path text COLLATE "C" NOT NULL,
    key bytea NOT NULL, src bytea NOT NULL, PRIMARY KEY(pipe, ds, path, key, src));
CREATE INDEX deps_src ON deps(pipe, src);
CREATE TABLE tracking(
    pipe text COLLATE "C" NOT NULL, ds text COLLATE "C" NOT NULL, off bigint NOT NULL, PRIMARY KEY(pipe, ds));
"""


async def record(conn: asyncpg.Connection, pipe: str, dependencies: Mapping[str, Collection[Dependency]]) -> None:
    """Replace the rows of each source id of ``dependencies``: two statements per call."""
    await conn.execute("DELETE FROM deps WHERE pipe = $1 AND src = ANY($2::bytea[])",
                       pipe, [s.encode() for s in dependencies])
    rows = {(ds, path, key.encode(), src.encode()) for src, deps in dependencies.items() for ds, path, key in deps}
    if rows:
        ds, paths, keys, srcs = zip(*rows, strict=True)
        await conn.execute("INSERT INTO deps(pipe, ds, path, key, src) SELECT $1, * FROM "
                           "unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[]) ON CONFLICT DO NOTHING",
                           pipe, ds, paths, keys, srcs)


_MATCHES = ("WITH c AS (SELECT DISTINCT id FROM log WHERE ds = $1 AND off > $2 AND off <= $3) "
            f"SELECT d.src, d.path, d.key FROM c JOIN deps d ON d.pipe = $4 AND d.ds = $5 AND d.path = '{FOUND}' "
            "AND d.key = c.id UNION ALL SELECT d.src, d.path, d.key FROM c JOIN hix h ON h.ds = $1 AND h.id = c.id "
            "JOIN deps d ON d.pipe = $4 AND d.ds = $5 AND d.path = h.path AND d.key = h.key")
"""``(src, path, key)`` of the look-ups matched by the ids of a dataset changed in ``($2, $3]``."""


async def sources(conn: asyncpg.Connection, pipe: str, ds: DatasetRow, after: int, upto: int,
                  limit: int) -> list[str]:
    """See :meth:`StateStore.tracked_sources`."""
    rows = await conn.fetch(f"SELECT DISTINCT src FROM ({_MATCHES}) m ORDER BY src LIMIT $6",
                            ds.key, after, upto, pipe, ds.name, limit)
    return [r[0].decode() for r in rows]


async def joins(conn: asyncpg.Connection, pipe: str, ds: DatasetRow, after: int, upto: int,
                top: int) -> list[tuple[str, str, int]]:
    """See :meth:`StateStore.tracked_joins`."""
    rows = await conn.fetch(f"SELECT path, key, count(DISTINCT src) n FROM ({_MATCHES}) m GROUP BY path, key "
                            "ORDER BY n DESC, path, key LIMIT $6", ds.key, after, upto, pipe, ds.name, top)
    return [(r[0], r[1].decode(), int(r[2])) for r in rows]


async def offsets(conn: asyncpg.Connection, pipe: str | None = None) -> dict[str, dict[str, int]]:
    """Tracking offsets per pipe (of ``pipe`` only, when given), dataset -> offset."""
    rows = await (conn.fetch("SELECT pipe, ds, off FROM tracking WHERE pipe = $1", pipe) if pipe is not None
                  else conn.fetch("SELECT pipe, ds, off FROM tracking"))
    out: dict[str, dict[str, int]] = {}
    for p, ds, off in rows:
        out.setdefault(p, {})[ds] = off
    return out


async def put_offsets(conn: asyncpg.Connection, pipe: str, tracking: Mapping[str, int]) -> None:
    await conn.execute("INSERT INTO tracking(pipe, ds, off) SELECT $1, * FROM unnest($2::text[], $3::bigint[]) "
                       "ON CONFLICT (pipe, ds) DO UPDATE SET off = excluded.off",
                       pipe, list(tracking), list(tracking.values()))
