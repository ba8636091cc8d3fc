"""Dataset tables of the PostgreSQL store: the log, the latest-version index, the write path.

The same semantics as :mod:`runtime.store._sqlite_datasets` (whose pure parts, the planning of a
batch's versions, are shared), on shared tables keyed by the dataset's ``ds``:

* ``log(ds, off, id, body)``: every version as stored JSON;
* ``latest(ds, id, off, hash, deleted, seen)``: the latest written version per id and the marker
  of the last full run that wrote it (deletion tracking);
* ``seen(ds, off, sweep)``: versions a full run saw unchanged.

Every function takes a connection inside a transaction the caller owns; a batch costs a fixed
number of statements (arrays bound with ``unnest``), never one per entity. Writers of one dataset
are serialised by the row lock on its ``datasets`` row (:func:`find_or_create`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from runtime.entities import Entity, PreparedBatch, prepare
from runtime.store._sqlite_datasets import NO_HOLD, DatasetRow, Prior, now_us, plan_writes, with_index
from runtime.store.postgres import indexes as ixpg
from runtime.store.protocol import Checkpoint, RunStart, TripInfo, WriteResult

__all__ = ["NO_HOLD", "DatasetRow", "now_us"]

_COLUMNS = "ds, name, committed, next, populated, trip, ids, deleted, indexes"


def b(eid: str) -> bytes:
    """An entity id or unit key as stored (its UTF-8 bytes)."""
    return eid.encode()


def _row(r: asyncpg.Record) -> DatasetRow:
    trip = TripInfo(**orjson.loads(r[5])) if r[5] else None
    indexes = tuple(orjson.loads(r[8])) if r[8] else ()
    return DatasetRow(r[0], r[1], r[2], r[3], r[4], trip, r[6], r[7], indexes)


async def find(conn: asyncpg.Connection, name: str, *, lock: bool = False) -> DatasetRow | None:
    """The dataset's row (locked for the transaction with ``lock``), or None when it does not exist."""
    r = await conn.fetchrow(f"SELECT {_COLUMNS} FROM datasets WHERE name = $1{' FOR UPDATE' if lock else ''}", name)
    return None if r is None else _row(r)


async def indexed(conn: asyncpg.Connection, dataset: str, path: Sequence[str]) -> DatasetRow | None:
    """:func:`~runtime.store._sqlite_datasets.with_index` of the dataset's row."""
    return with_index(await find(conn, dataset), dataset, path)


async def find_or_create(conn: asyncpg.Connection, name: str) -> DatasetRow:
    """The dataset's row, locked until the transaction ends; created on first use."""
    found = await find(conn, name, lock=True)
    if found is not None:
        return found
    await conn.execute(
        "INSERT INTO datasets(name, committed, next, populated, created_us) VALUES ($1, -1, 0, false, $2) "
        "ON CONFLICT (name) DO NOTHING", name, now_us(),
    )
    found = await find(conn, name, lock=True)
    assert found is not None  # inserted above, or by a concurrent transaction that committed
    return found


async def save_row(conn: asyncpg.Connection, ds: DatasetRow) -> None:
    trip = orjson.dumps(ds.trip.__dict__).decode() if ds.trip else None
    await conn.execute(
        "UPDATE datasets SET committed = $1, next = $2, populated = $3, trip = $4, ids = $5, deleted = $6 "
        "WHERE ds = $7", ds.committed, ds.next_offset, ds.populated, trip, ds.ids, ds.deleted, ds.key,
    )


async def compare(conn: asyncpg.Connection, ds: DatasetRow, batch: PreparedBatch, sweep: int | None) -> Prior:
    """Compare the batch's hashes with the latest-version index in the server (see
    :func:`runtime.store._sqlite_datasets.compare`: the same result, and with ``sweep`` the
    unchanged latest versions marked seen). An id occurring more than once in the batch is always
    returned, for :func:`plan_writes` to compare in order."""
    pairs: dict[str, str | None] = dict(zip(batch.ids, batch.hashes, strict=True))
    if len(pairs) != len(batch.ids):
        once: set[str] = set()
        for eid in batch.ids:
            if eid in once:
                pairs[eid] = None
            once.add(eid)
    ids = [b(e) for e in pairs]
    hashes = list(pairs.values())
    if sweep is not None:
        await conn.execute(
            "INSERT INTO seen(ds, off, sweep) SELECT $1, x.off, $2 FROM unnest($3::bytea[], $4::text[]) j(id, hash) "
            "JOIN latest x ON x.ds = $1 AND x.id = j.id AND x.hash = j.hash "
            "ON CONFLICT (ds, off) DO UPDATE SET sweep = excluded.sweep", ds.key, sweep, ids, hashes,
        )
    rows = await conn.fetch(
        "SELECT j.id, x.off, x.hash, x.deleted FROM unnest($2::bytea[], $3::text[]) j(id, hash) "
        "LEFT JOIN latest x ON x.ds = $1 AND x.id = j.id WHERE j.hash IS NULL OR x.hash IS DISTINCT FROM j.hash",
        ds.key, ids, hashes,
    )
    return {r[0].decode(): None if r[1] is None else (r[1], r[2], int(r[3])) for r in rows}


async def mark_seen(conn: asyncpg.Connection, ds: DatasetRow, offsets: list[int], sweep: int) -> None:
    """Mark the latest versions at ``offsets`` as seen by a full run."""
    await conn.execute(
        "INSERT INTO seen(ds, off, sweep) SELECT $1, o, $2 FROM unnest($3::bigint[]) o "
        "ON CONFLICT (ds, off) DO UPDATE SET sweep = excluded.sweep", ds.key, sweep, list(dict.fromkeys(offsets)),
    )


async def write(
    conn: asyncpg.Connection,
    ds: DatasetRow,
    entities: Sequence[Entity] | PreparedBatch,
    *,
    pipe: str,
    checkpoint: Checkpoint | None,
    previous: Checkpoint,
    sweep: int | None,
    keep_versions: int | None,
    change_limit: int | None,
    run_start: RunStart | None = None,
    hold: int = NO_HOLD,
) -> WriteResult:
    """The body of :meth:`StateStore.write_batch` inside the caller's transaction (see
    :func:`runtime.store._sqlite_datasets.write`)."""
    batch = entities if isinstance(entities, PreparedBatch) else prepare(entities, pipe=pipe)
    plan = plan_writes(batch, await compare(conn, ds, batch, sweep), ds.next_offset, sweep)
    if sweep is not None and plan.unchanged_offsets:
        await mark_seen(conn, ds, plan.unchanged_offsets, sweep)
    ds.ids += plan.new_ids
    ds.deleted += plan.deleted_delta
    if plan.log_rows:
        if run_start is not None:  # before any compaction of this run's superseded versions
            await note_run_start(conn, ds, pipe, run_start)
        offs, ids, bodies = zip(*plan.log_rows, strict=True)
        await conn.execute(
            "INSERT INTO log(ds, off, id, body) SELECT $1, * FROM unnest($2::bigint[], $3::bytea[], $4::bytea[])",
            ds.key, offs, [b(e) for e in ids], bodies,
        )
        lids, loffs, lhashes, ldeleted, lseen = zip(*plan.latest_rows, strict=True)
        await conn.execute(
            "INSERT INTO latest(ds, id, off, hash, deleted, seen) SELECT $1, * FROM "
            "unnest($2::bytea[], $3::bigint[], $4::text[], $5::boolean[], $6::bigint[]) "
            "ON CONFLICT (ds, id) DO UPDATE SET off = excluded.off, hash = excluded.hash, "
            "deleted = excluded.deleted, seen = excluded.seen",
            ds.key, [b(e) for e in lids], loffs, lhashes, [bool(d) for d in ldeleted], lseen,
        )
        if ds.indexes:  # hop indexes move in this transaction (none: no statement)
            await ixpg.update(conn, ds, bodies)
    n = len(plan.log_rows)
    first = ds.next_offset
    ds.next_offset += n
    if ds.trip is None and change_limit is not None and n > change_limit:
        ds.committed = first + change_limit - 1 if change_limit > 0 else ds.committed
        before = run_start.checkpoint if run_start is not None else previous
        ds.trip = TripInfo(
            pipe=pipe, committed=ds.committed, since=before.since, sweep=before.sweep, at_us=now_us(),
            limit=change_limit, run_offset=None if run_start is None else run_start.offset,
            tracking=before.tracking,
        )
    elif ds.trip is None:
        ds.committed = ds.next_offset - 1
        if keep_versions is not None and plan.superseded_ids:
            await compact_ids(conn, ds, plan.superseded_ids, keep_versions, hold=hold)
    await save_row(conn, ds)
    r = plan.result
    return WriteResult(r.new, r.changed, r.deleted, r.unchanged, tripped=ds.trip is not None)


RUN_FLOORS = """
CREATE TABLE run_floors(ds integer NOT NULL, pipe text COLLATE "C" NOT NULL, off bigint NOT NULL,
    PRIMARY KEY(ds, pipe));
"""
"""Where the last run of each pipe writing a dataset started (schema version 4; see
:func:`runtime.store._sqlite_datasets.note_run_start`)."""

_COMPACTABLE = (
    "SELECT off FROM (SELECT off, id, row_number() OVER (PARTITION BY id ORDER BY off DESC) AS rn "
    "FROM log WHERE ds = $1 {where}) t WHERE rn > $2 AND off <= $3 AND NOT EXISTS (SELECT 1 FROM run_floors f "
    "WHERE f.ds = $1 AND t.off = (SELECT max(m.off) FROM log m WHERE m.ds = $1 AND m.id = t.id AND m.off < f.off))"
)
"""Offsets compaction may delete (see :func:`runtime.store._sqlite_datasets._compactable`):
older than their id's newest ``$2`` versions, at or below the consumers' hold ``$3``, and not the
newest version below any of the dataset's run floors."""


async def note_run_start(conn: asyncpg.Connection, ds: DatasetRow, pipe: str, run_start: RunStart) -> None:
    """See :func:`runtime.store._sqlite_datasets.note_run_start`."""
    await conn.execute("INSERT INTO run_floors(ds, pipe, off) VALUES ($1, $2, $3) ON CONFLICT (ds, pipe) "
                       "DO UPDATE SET off = excluded.off WHERE run_floors.off != excluded.off",
                       ds.key, pipe, run_start.offset)


async def compact_ids(
    conn: asyncpg.Connection, ds: DatasetRow, ids: Sequence[str], keep_versions: int, *, hold: int = NO_HOLD,
) -> int:
    """Delete versions of ``ids`` older than their newest ``keep_versions``, keeping every version
    above ``hold`` and the newest one below each run floor; returns how many were deleted."""
    rows = await conn.fetch(
        f"DELETE FROM log WHERE ds = $1 AND off IN ({_COMPACTABLE.format(where='AND id = ANY($4::bytea[])')}) "
        "RETURNING off", ds.key, keep_versions, hold, [b(e) for e in dict.fromkeys(ids)],
    )
    removed = [r[0] for r in rows]
    await forget_seen(conn, ds, removed)
    return len(removed)


async def compact_all(conn: asyncpg.Connection, ds: DatasetRow, keep_versions: int, *, hold: int = NO_HOLD) -> int:
    """Compact every id of the dataset, keeping every version above ``hold``."""
    rows = await conn.fetch(f"DELETE FROM log WHERE ds = $1 AND off IN ({_COMPACTABLE.format(where='')}) "
                            "RETURNING off", ds.key, keep_versions, hold)
    removed = [r[0] for r in rows]
    await forget_seen(conn, ds, removed)
    return len(removed)


async def hold_of(conn: asyncpg.Connection, ds: DatasetRow) -> int:
    """The offset above which compaction keeps every version (the lowest consumer since), or :data:`NO_HOLD`."""
    holds = await holders(conn, ds.name)
    return holds[0][1] if holds else NO_HOLD


async def holders(conn: asyncpg.Connection, dataset: str) -> list[tuple[str, int]]:
    """(pipe, offset read up to) of the recorded consumers of ``dataset``, lowest first."""
    rows = await conn.fetch(
        "SELECT c.pipe, p.since FROM consumers c LEFT JOIN pipes p ON p.pipe = c.pipe WHERE c.dataset = $1", dataset
    )
    out = []
    for pipe, raw in rows:
        since = orjson.loads(raw) if raw is not None else None
        out.append((pipe, since if isinstance(since, int) and not isinstance(since, bool) else -1))
    return sorted(out, key=lambda h: (h[1], h[0]))


async def forget_seen(conn: asyncpg.Connection, ds: DatasetRow, offsets: Sequence[int]) -> None:
    """Drop seen marks of versions that no longer exist (compacted or rolled back)."""
    if offsets:
        await conn.execute("DELETE FROM seen WHERE ds = $1 AND off = ANY($2::bigint[])", ds.key, list(offsets))


# A scalar subquery, not NOT EXISTS: it is always one primary-key probe per id, whereas the anti
# join NOT EXISTS becomes is planned from statistics, which right after a bulk load (before
# autovacuum analyses the tables) made it a nested loop over the whole of ``seen`` per id.
_UNSEEN = ("x.ds = $1 AND NOT x.deleted AND (x.seen IS NULL OR x.seen <> $2) "
           "AND (SELECT s.sweep FROM seen s WHERE s.ds = x.ds AND s.off = x.off) IS DISTINCT FROM $2")


async def unseen(conn: asyncpg.Connection, ds: DatasetRow, sweep: int, limit: int) -> list[Entity]:
    """Latest non-deleted versions not seen by ``sweep``, by id."""
    rows = await conn.fetch(f"SELECT l.body FROM latest x JOIN log l ON l.ds = x.ds AND l.off = x.off "
                            f"WHERE {_UNSEEN} ORDER BY x.id LIMIT $3", ds.key, sweep, limit)
    return [orjson.loads(r[0]) for r in rows]


async def count_unseen(conn: asyncpg.Connection, ds: DatasetRow, sweep: int) -> int:
    """How many ids :func:`unseen` would return without a limit."""
    return int(await conn.fetchval(f"SELECT count(*) FROM latest x WHERE {_UNSEEN}", ds.key, sweep))


async def read_bodies(
    conn: asyncpg.Connection, ds: DatasetRow, since: int | None, limit: int, history: bool
) -> tuple[list[bytes], int | None]:
    """Committed versions after ``since`` as stored JSON (see :meth:`StateStore.read_bodies`)."""
    low = -1 if since is None else since
    if history:
        rows = await conn.fetch("SELECT off, body FROM log WHERE ds = $1 AND off > $2 AND off <= $3 "
                                "ORDER BY off LIMIT $4", ds.key, low, ds.committed, limit)
    else:
        rows = await conn.fetch(
            "SELECT l.off, l.body FROM log l WHERE l.ds = $1 AND l.off > $2 AND l.off <= $3 AND NOT EXISTS "
            "(SELECT 1 FROM log n WHERE n.ds = $1 AND n.id = l.id AND n.off > l.off AND n.off <= $3) "
            "ORDER BY l.off LIMIT $4", ds.key, low, ds.committed, limit,
        )
    end = (ds.committed if ds.committed > low else since) if len(rows) < limit else rows[-1][0]
    return [r[1] for r in rows], end


async def versions(conn: asyncpg.Connection, ds: DatasetRow, entity_id: str, history: bool) -> list[Entity]:
    """Committed versions of one id, oldest first (only the latest unless ``history``)."""
    rows = await conn.fetch(f"SELECT body FROM log WHERE ds = $1 AND id = $2 AND off <= $3 ORDER BY off DESC"
                            f"{'' if history else ' LIMIT 1'}", ds.key, b(entity_id), ds.committed)
    return [orjson.loads(r[0]) for r in reversed(rows)]


async def rollback_held(conn: asyncpg.Connection, ds: DatasetRow) -> int:
    """Delete versions above the committed offset and rebuild the index of the ids they touched."""
    ids = [r[0] for r in await conn.fetch("SELECT DISTINCT id FROM log WHERE ds = $1 AND off > $2",
                                          ds.key, ds.committed)]
    gone = [r[0] for r in await conn.fetch("DELETE FROM log WHERE ds = $1 AND off > $2 RETURNING off",
                                           ds.key, ds.committed)]
    await forget_seen(conn, ds, gone)
    await conn.execute("DELETE FROM latest WHERE ds = $1 AND id = ANY($2::bytea[])", ds.key, ids)
    rows = await conn.fetch("SELECT DISTINCT ON (id) id, off, body FROM log WHERE ds = $1 AND id = ANY($2::bytea[]) "
                            "ORDER BY id, off DESC", ds.key, ids)
    latest = [(r[0], r[1], (e := orjson.loads(r[2]))["_hash"], e.get("_deleted") is True) for r in rows]
    if latest:
        lids, loffs, lhashes, ldeleted = zip(*latest, strict=True)
        await conn.execute("INSERT INTO latest(ds, id, off, hash, deleted, seen) SELECT $1, *, NULL FROM "
                           "unnest($2::bytea[], $3::bigint[], $4::text[], $5::boolean[])",
                           ds.key, lids, loffs, lhashes, ldeleted)
    await ixpg.refresh(conn, ds, ids)
    ds.next_offset = ds.committed + 1
    ds.ids, ds.deleted = await counts(conn, ds)
    return len(gone)


async def revert_run(conn: asyncpg.Connection, ds: DatasetRow, run_offset: int, pipe: str) -> int:
    """Revert what a run made visible (see :func:`runtime.store._sqlite_datasets.revert_run`)."""
    ids = [r[0] for r in await conn.fetch(  # in the order the run first wrote them, as SQLite's scan
        "SELECT id FROM log WHERE ds = $1 AND off >= $2 AND off <= $3 GROUP BY id ORDER BY min(off)",
        ds.key, run_offset, ds.committed)]
    if not ids:
        return 0
    rows = await conn.fetch("SELECT DISTINCT ON (id) id, body FROM log WHERE ds = $1 AND id = ANY($2::bytea[]) "
                            "AND off < $3 ORDER BY id, off DESC", ds.key, ids, run_offset)
    before = {r[0]: orjson.loads(r[1]) for r in rows}
    reverted: list[Entity] = [before.get(eid, {"_id": eid.decode(), "_deleted": True}) for eid in ids]
    result = await write(conn, ds, reverted, pipe=pipe, checkpoint=None, previous=Checkpoint(),
                         sweep=None, keep_versions=None, change_limit=None)
    return result.changes


async def visible_counts(conn: asyncpg.Connection, ds: DatasetRow) -> tuple[int, int]:
    """(ids, deleted ids) as readers see them, without the versions held above the committed offset."""
    rows = await conn.fetch(
        "SELECT x.deleted, v.body FROM latest x LEFT JOIN LATERAL (SELECT m.body FROM log m WHERE m.ds = x.ds "
        "AND m.id = x.id AND m.off <= $2 ORDER BY m.off DESC LIMIT 1) v ON true WHERE x.ds = $1 AND x.off > $2",
        ds.key, ds.committed,
    )
    unseen_ids = sum(r[1] is None for r in rows)
    held_deleted = sum(bool(r[0]) for r in rows)
    visible_deleted = sum(r[1] is not None and orjson.loads(r[1]).get("_deleted") is True for r in rows)
    return ds.ids - unseen_ids, ds.deleted - held_deleted + visible_deleted


async def counts(conn: asyncpg.Connection, ds: DatasetRow) -> tuple[int, int]:
    """(ids, deleted ids) in the latest-version index."""
    r = await conn.fetchrow("SELECT count(*), count(*) FILTER (WHERE deleted) FROM latest WHERE ds = $1", ds.key)
    return int(r[0]), int(r[1])


def json_text(value: Any) -> str | None:
    """A JSON value as stored in a text column, None for None."""
    return None if value is None else orjson.dumps(value).decode()


def from_json(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)
