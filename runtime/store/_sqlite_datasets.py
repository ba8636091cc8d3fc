"""Dataset tables of the SQLite store: the log, the latest-version index, the write path.

Each dataset gets two tables named after its integer key ``N`` in ``datasets``:

* ``log_N(off INTEGER PRIMARY KEY, id TEXT, body BLOB)``: every version as stored JSON (with
  ``_updated``, ``_previous``, ``_ts``, ``_hash``), plus an index on ``(id, off)``;
* ``latest_N(id PRIMARY KEY, off, hash, deleted, seen)``: the latest written version per id and
  the marker of the last full run that wrote it (deletion tracking);
* ``seen_N(off INTEGER PRIMARY KEY, sweep)``: versions a full run saw unchanged, so a no-op
  rewrite does not rewrite the latest-version index.

Every function takes an open :class:`aiosqlite.Connection` inside a transaction the caller owns;
one batch costs a fixed number of statements, never one per entity.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from runtime.dtl.joinkeys import path_name
from runtime.entities import Entity, PreparedBatch, prepare
from runtime.errors import StoreError
from runtime.store import _sqlite_indexes as ixsql
from runtime.store._sqlite_bulk import MAX_VARS, each, insert_rows, json_param
from runtime.store.protocol import Checkpoint, RunStart, TripInfo, WriteResult

NO_HOLD = 2**62  # a compaction hold above every offset: nothing held


@dataclass
class DatasetRow:
    """A row of the ``datasets`` table (mutable while a write transaction runs)."""

    key: int
    name: str
    committed: int
    next_offset: int
    populated: bool
    trip: TripInfo | None
    ids: int = 0
    deleted: int = 0
    indexes: tuple[str, ...] = ()  # property paths of its hop indexes (runtime.dtl.joinkeys.path_name)

    @property
    def log(self) -> str:
        return f"log_{self.key}"

    @property
    def latest(self) -> str:
        return f"latest_{self.key}"

    @property
    def seen(self) -> str:
        return f"seen_{self.key}"



def _trip_from_json(raw: str | None) -> TripInfo | None:
    return TripInfo(**orjson.loads(raw)) if raw else None


def _trip_to_json(trip: TripInfo | None) -> str | None:
    return orjson.dumps(trip.__dict__).decode() if trip else None


async def find(conn: aiosqlite.Connection, name: str) -> DatasetRow | None:
    """The dataset's row, or None when it does not exist."""
    row = await fetch_one(
        conn, "SELECT ds, name, committed, next, populated, trip, ids, deleted, indexes FROM datasets WHERE name = ?",
        (name,),
    )
    if row is None:
        return None
    indexes = tuple(orjson.loads(row[8])) if row[8] else ()
    return DatasetRow(row[0], row[1], row[2], row[3], bool(row[4]), _trip_from_json(row[5]), row[6], row[7], indexes)


def with_index(ds: DatasetRow | None, dataset: str, path: Sequence[str]) -> DatasetRow | None:
    """``ds`` (a dataset's row; None: no such dataset) when it has a hop index on ``path`` (both
    stores).

    Raises:
        StoreError: it has none.
    """
    if ds is not None and path_name(path) not in ds.indexes:
        raise StoreError(f"dataset {dataset!r} has no hop index on {'.'.join(path)!r}; call ensure_index() first")
    return ds


async def indexed(conn: aiosqlite.Connection, dataset: str, path: Sequence[str]) -> DatasetRow | None:
    """:func:`with_index` of the dataset's row."""
    return with_index(await find(conn, dataset), dataset, path)


async def find_or_create(conn: aiosqlite.Connection, name: str) -> DatasetRow:
    """The dataset's row, creating the dataset and its tables on first use."""
    found = await find(conn, name)
    if found is not None:
        return found
    cur = await conn.execute(
        "INSERT INTO datasets(name, committed, next, populated, created_us) VALUES (?, -1, 0, 0, ?)",
        (name, now_us()),
    )
    ds = DatasetRow(int(cur.lastrowid or 0), name, -1, 0, False, None)
    await conn.execute(f"CREATE TABLE {ds.log}(off INTEGER PRIMARY KEY, id TEXT NOT NULL, body BLOB NOT NULL)")
    await conn.execute(f"CREATE INDEX {ds.log}_id ON {ds.log}(id, off)")
    await conn.execute(
        f"CREATE TABLE {ds.latest}(id TEXT PRIMARY KEY, off INTEGER NOT NULL, hash TEXT NOT NULL,"
        " deleted INTEGER NOT NULL, seen INTEGER) WITHOUT ROWID"
    )
    await create_seen(conn, ds.key)
    return ds


async def create_seen(conn: aiosqlite.Connection, key: int) -> None:
    """Create the ``seen_N`` table of dataset ``key`` if it does not exist."""
    await conn.execute(f"CREATE TABLE IF NOT EXISTS seen_{int(key)}(off INTEGER PRIMARY KEY, sweep INTEGER NOT NULL)")


async def save_row(conn: aiosqlite.Connection, ds: DatasetRow) -> None:
    await conn.execute(
        "UPDATE datasets SET committed = ?, next = ?, populated = ?, trip = ?, ids = ?, deleted = ? WHERE ds = ?",
        (ds.committed, ds.next_offset, int(ds.populated), _trip_to_json(ds.trip), ds.ids, ds.deleted, ds.key),
    )


def now_us() -> int:
    """Wall-clock time in integer microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def chunks(items: Sequence[Any], size: int = MAX_VARS) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def marks(n: int) -> str:
    return ",".join("?" * n)


async def fetch_one(conn: aiosqlite.Connection, sql: str, parameters: Sequence[Any] = ()) -> Any:
    """The first row of a query, or None: one round trip to the connection's thread (a cursor's
    ``execute``/``fetchone``/``close`` are three)."""
    return next(iter(await conn.execute_fetchall(sql, parameters)), None)


Prior = dict[str, "tuple[int, str, int] | None"]
"""Per id whose write is not a no-op: its latest (off, hash, deleted), or None if never written."""


async def compare(conn: aiosqlite.Connection, ds: DatasetRow, batch: PreparedBatch, sweep: int | None) -> Prior:
    """Compare the batch's hashes with the latest-version index inside SQLite: two statements
    over a JSON object ``{id: hash}``, so the per-entity work runs in C without the GIL.

    With ``sweep`` set, the latest versions the batch leaves unchanged are marked seen by that
    full run (rows of ``seen_N``). Returns the ids whose write is not a no-op with their latest
    version; an id absent from the result is unchanged (and marked). An id occurring more than
    once in the batch, or holding a NUL character (which SQLite's JSON functions cut off), is
    always returned: :func:`plan_writes` compares it in order and leaves its marks to
    :func:`mark_seen`.
    """
    pairs: dict[str, str | None] = dict(zip(batch.ids, batch.hashes, strict=True))
    if len(pairs) != len(batch.ids):
        once: set[str] = set()
        for eid in batch.ids:
            if eid in once:
                pairs[eid] = None
            once.add(eid)
    payload = json_param(pairs)
    exact: list[str] = []
    if payload is None:  # bind the ids holding NUL instead
        exact = [eid for eid in pairs if "\x00" in eid]
        for eid in exact:
            del pairs[eid]
        payload = orjson.dumps(pairs).decode()
    if sweep is not None:
        await conn.execute(
            f"INSERT OR REPLACE INTO {ds.seen}(off, sweep) SELECT x.off, ? FROM json_each(?) j "
            f"JOIN {ds.latest} x ON x.id = j.key AND x.hash = j.value",
            (sweep, payload),
        )
    row = await fetch_one(  # two lists: ids never written, and [id, off, hash, deleted] of the others
        conn,
        f"SELECT json_group_array(j.key) FILTER (WHERE x.id IS NULL), json_group_array(json_array(j.key, x.off, "
        f"x.hash, x.deleted)) FILTER (WHERE x.id IS NOT NULL) FROM json_each(?) j "
        f"LEFT JOIN {ds.latest} x ON x.id = j.key WHERE j.type = 'null' OR x.hash IS NOT j.value",
        (payload,),
    )
    assert row is not None  # an aggregate always returns one row
    prior: Prior = dict.fromkeys(orjson.loads(row[0]))
    prior.update((eid, (off, digest, deleted)) for eid, off, digest, deleted in orjson.loads(row[1]))
    for part in chunks(exact):
        rows = await conn.execute_fetchall(
            f"SELECT id, off, hash, deleted FROM {ds.latest} WHERE id IN ({marks(len(part))})", part
        )
        found = {eid: (off, digest, deleted) for eid, off, digest, deleted in rows}
        prior.update((eid, found.get(eid)) for eid in part)
    return prior


async def mark_seen(conn: aiosqlite.Connection, ds: DatasetRow, offsets: list[int], sweep: int) -> None:
    """Mark the latest versions at ``offsets`` as seen by a full run (rows of ``seen_N``)."""
    await conn.executemany(f"INSERT OR REPLACE INTO {ds.seen}(off, sweep) VALUES (?, ?)",
                           [(off, sweep) for off in offsets])


@dataclass
class _Planned:
    log_rows: list[tuple[int, str, bytes]]
    latest_rows: list[tuple[str, int, str, int, int | None]]
    unchanged_offsets: list[int]
    superseded_ids: list[str]
    result: WriteResult
    new_ids: int
    deleted_delta: int


def plan_writes(batch: PreparedBatch, prior: Prior, next_offset: int, sweep: int | None) -> _Planned:
    """Drop no-ops, assign offsets, build stored bodies: pure computation, no I/O.

    ``prior`` is :func:`compare`'s result (updated in place as versions are planned); an id
    absent from it is unchanged. A write with an ``_if_hash`` (``batch.expected``) whose id's
    latest version, counting those planned before it in the batch, has another hash is dropped
    as unchanged (see :mod:`runtime.entities`).

    The stored body is the canonical JSON (the bytes that were hashed) with the generated fields
    spliced in before the closing brace: one serialisation per entity.
    """
    ts = now_us()
    log_rows: list[tuple[int, str, bytes]] = []
    latest_rows: dict[str, tuple[str, int, str, int, int | None]] = {}
    superseded: list[str] = []
    unchanged: list[int] = []
    new = changed = deleted = same = 0
    new_ids = deleted_delta = 0
    off = next_offset
    if not prior:  # the whole batch is a no-op (the common case of a full rescan)
        return _Planned([], [], [], [], WriteResult(unchanged=len(batch)), 0, 0)
    expected = batch.expected or [None] * len(batch)
    for eid, digest, head, is_del, want in zip(batch.ids, batch.hashes, batch.heads, batch.deleted, expected,
                                               strict=True):
        if eid not in prior:
            same += 1  # identical to the latest version, marked by compare()
            continue
        prev = prior[eid]
        if want is not None and (prev is None or prev[1] != want):
            same += 1  # _if_hash: the latest version (perhaps written earlier in this batch) is another one
            continue
        if prev is not None and prev[1] == digest:
            same += 1  # identical to the latest version
            unchanged.append(prev[0])
            continue
        if is_del and prev is None:
            same += 1  # a deletion of an id never written
            continue
        if is_del:
            deleted += 1
        elif prev is None:
            new += 1
        else:
            changed += 1
        if prev is None:
            new_ids += 1
        else:
            superseded.append(eid)
            deleted_delta += int(is_del) - prev[2]
        previous = b"null" if prev is None else b"%d" % prev[0]
        body = b'%s,"_updated":%d,"_previous":%s,"_ts":%d,"_hash":"%s"}' % (
            head, off, previous, ts, digest.encode()
        )
        log_rows.append((off, eid, body))
        latest_rows[eid] = (eid, off, digest, int(is_del), sweep)
        prior[eid] = (off, digest, int(is_del))
        off += 1
    return _Planned(
        log_rows,
        list(latest_rows.values()),
        unchanged,
        superseded,
        WriteResult(new=new, changed=changed, deleted=deleted, unchanged=same),
        new_ids,
        deleted_delta,
    )


async def write(
    conn: aiosqlite.Connection,
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
    """The body of :meth:`StateStore.write_batch` inside the caller's transaction (saves the
    dataset row; the caller may change and save it again). ``hold``: compaction keeps every
    version above this offset (consumers' sinces)."""
    batch = entities if isinstance(entities, PreparedBatch) else prepare(entities, pipe=pipe)
    plan = plan_writes(batch, await compare(conn, ds, batch, sweep), ds.next_offset, sweep)
    if sweep is not None and plan.unchanged_offsets:
        await mark_seen(conn, ds, plan.unchanged_offsets, sweep)
    ds.ids += plan.new_ids
    ds.deleted += plan.deleted_delta
    if plan.log_rows:
        if run_start is not None:  # before any compaction of this run's superseded versions
            await note_run_start(conn, ds, pipe, run_start)
        await conn.executemany(f"INSERT INTO {ds.log}(off, id, body) VALUES (?, ?, ?)", plan.log_rows)
        await insert_rows(conn, f"INSERT INTO {ds.latest}(id, off, hash, deleted, seen)", plan.latest_rows,
                          "ON CONFLICT(id) DO UPDATE SET off = excluded.off, hash = excluded.hash, "
                          "deleted = excluded.deleted, seen = excluded.seen")
        if ds.indexes:  # hop indexes move in this transaction (none: no statement)
            await ixsql.update(conn, ds, [body for _, _, body in plan.log_rows])
    n = len(plan.log_rows)
    first = ds.next_offset
    ds.next_offset += n
    if ds.trip is None and change_limit is not None and n > change_limit:
        ds.committed = first + change_limit - 1 if change_limit > 0 else ds.committed
        before = run_start.checkpoint if run_start is not None else previous
        ds.trip = TripInfo(
            pipe=pipe,
            committed=ds.committed,
            since=before.since,
            sweep=before.sweep,
            at_us=now_us(),
            limit=change_limit,
            run_offset=None if run_start is None else run_start.offset,
            tracking=before.tracking,
        )
    elif ds.trip is None:
        ds.committed = ds.next_offset - 1
        if keep_versions is not None and plan.superseded_ids:
            await compact_ids(conn, ds, plan.superseded_ids, keep_versions, hold=hold)
    await save_row(conn, ds)
    r = plan.result
    return WriteResult(r.new, r.changed, r.deleted, r.unchanged, tripped=ds.trip is not None)


def _compactable(ds: DatasetRow, where: str) -> str:
    """Offsets of versions compaction may delete, among the ids matching ``where``: older than
    their id's newest ``keep_versions`` (parameter 1), at or below the consumers' hold
    (parameter 2, see :func:`hold_of`), and not the newest version below any of the dataset's
    run floors (:func:`note_run_start`)."""
    return (
        f"SELECT off FROM (SELECT off, id, row_number() OVER (PARTITION BY id ORDER BY off DESC) AS rn "
        f"FROM {ds.log} {where}) t WHERE rn > ? AND off <= ? AND NOT EXISTS (SELECT 1 FROM run_floors f "
        f"WHERE f.ds = {ds.key} AND t.off = (SELECT max(m.off) FROM {ds.log} m WHERE m.id = t.id AND m.off < f.off))"
    )


async def note_run_start(conn: aiosqlite.Connection, ds: DatasetRow, pipe: str, run_start: RunStart) -> None:
    """Record where ``pipe``'s run into ``ds`` started: its floor, replaced by its next run's.
    Compaction keeps each id's newest version below each floor, so a circuit breaker tripped
    later in that run can roll the run back to it, whenever the compaction ran (a run that ended
    keeps one version more of the ids it changed until the pipe's next run)."""
    await conn.execute("INSERT INTO run_floors(ds, pipe, off) VALUES (?, ?, ?) ON CONFLICT(ds, pipe) "
                       "DO UPDATE SET off = excluded.off WHERE off != excluded.off", (ds.key, pipe, run_start.offset))


async def compact_ids(
    conn: aiosqlite.Connection, ds: DatasetRow, ids: Sequence[str], keep_versions: int, *, hold: int = NO_HOLD,
) -> int:
    """Delete versions of ``ids`` older than their newest ``keep_versions``, keeping every version
    above ``hold`` and the newest one below each run floor; returns how many were deleted."""
    removed: list[int] = []
    for part in chunks(list(dict.fromkeys(ids))):
        rows = await conn.execute_fetchall(
            f"DELETE FROM {ds.log} WHERE off IN ({_compactable(ds, f'WHERE id IN ({marks(len(part))})')}) "
            "RETURNING off",
            (*part, keep_versions, hold),
        )
        removed.extend(r[0] for r in rows)
    await forget_seen(conn, ds, removed)
    return len(removed)


async def hold_of(conn: aiosqlite.Connection, ds: DatasetRow) -> int:
    """The offset above which compaction keeps every version of ``ds``: the lowest since of the
    pipes recorded as reading it (-1 for one that read nothing yet), or :data:`NO_HOLD`."""
    holds = await holders(conn, ds.name)
    return holds[0][1] if holds else NO_HOLD


async def holders(conn: aiosqlite.Connection, dataset: str) -> list[tuple[str, int]]:
    """(pipe, offset read up to) of the recorded consumers of ``dataset``, lowest first; a since
    that is not an offset (none yet) counts as -1."""
    rows = await conn.execute_fetchall(
        "SELECT c.pipe, p.since FROM consumers c LEFT JOIN pipes p ON p.pipe = c.pipe WHERE c.dataset = ?",
        (dataset,),
    )
    out = []
    for pipe, raw in rows:
        since = orjson.loads(raw) if raw is not None else None
        out.append((pipe, since if isinstance(since, int) and not isinstance(since, bool) else -1))
    return sorted(out, key=lambda h: (h[1], h[0]))


async def forget_seen(conn: aiosqlite.Connection, ds: DatasetRow, offsets: Sequence[int]) -> None:
    """Drop seen marks of versions that no longer exist (compacted or rolled back)."""
    for part in chunks(list(offsets)):
        await conn.execute(f"DELETE FROM {ds.seen} WHERE off IN ({marks(len(part))})", part)


async def compact_all(conn: aiosqlite.Connection, ds: DatasetRow, keep_versions: int, *, hold: int = NO_HOLD) -> int:
    """Compact every id of the dataset, keeping every version above ``hold`` (operator command;
    O(dataset))."""
    rows = await conn.execute_fetchall(
        f"DELETE FROM {ds.log} WHERE off IN ({_compactable(ds, '')}) RETURNING off",
        (keep_versions, hold),
    )
    removed = [r[0] for r in rows]
    await forget_seen(conn, ds, removed)
    return len(removed)


def _unseen(ds: DatasetRow) -> str:
    """The condition on ``latest_N x`` of an id not seen by the full run bound twice after it."""
    return (f"x.deleted = 0 AND (x.seen IS NULL OR x.seen != ?) "
            f"AND NOT EXISTS (SELECT 1 FROM {ds.seen} s WHERE s.off = x.off AND s.sweep = ?)")


async def unseen(conn: aiosqlite.Connection, ds: DatasetRow, sweep: int, limit: int) -> list[Entity]:
    """Latest non-deleted versions not seen by ``sweep`` (deletion tracking candidates): neither
    written by it (``latest_N.seen``) nor marked unchanged by it (``seen_N``)."""
    sql = f"SELECT l.body FROM {ds.latest} x JOIN {ds.log} l ON l.off = x.off WHERE {_unseen(ds)} LIMIT ?"
    return [orjson.loads(row[0]) for row in await conn.execute_fetchall(sql, (sweep, sweep, limit))]


async def count_unseen(conn: aiosqlite.Connection, ds: DatasetRow, sweep: int) -> int:
    """How many ids :func:`unseen` would return without a limit."""
    row = await fetch_one(conn, f"SELECT count(*) FROM {ds.latest} x WHERE {_unseen(ds)}", (sweep, sweep))
    return int(row[0]) if row else 0


async def read(
    conn: aiosqlite.Connection, ds: DatasetRow, since: int | None, limit: int, history: bool
) -> tuple[list[Entity], int | None]:
    """Committed versions after ``since`` (see :meth:`StateStore.read`)."""
    bodies, end = await read_bodies(conn, ds, since, limit, history)
    return [orjson.loads(body) for body in bodies], end


async def read_bodies(
    conn: aiosqlite.Connection, ds: DatasetRow, since: int | None, limit: int, history: bool
) -> tuple[list[bytes], int | None]:
    """:func:`read` without decoding: each version's stored JSON (see :meth:`StateStore.read_bodies`)."""
    low = -1 if since is None else since
    if history:
        sql = f"SELECT off, body FROM {ds.log} WHERE off > ? AND off <= ? ORDER BY off LIMIT ?"
        args: tuple[Any, ...] = (low, ds.committed, limit)
    else:
        sql = (
            f"SELECT l.off, l.body FROM {ds.log} l WHERE l.off > ? AND l.off <= ? AND NOT EXISTS "
            f"(SELECT 1 FROM {ds.log} n WHERE n.id = l.id AND n.off > l.off AND n.off <= ?) "
            "ORDER BY l.off LIMIT ?"
        )
        args = (low, ds.committed, ds.committed, limit)
    rows = list(await conn.execute_fetchall(sql, args))
    if len(rows) < limit:
        end = ds.committed if ds.committed > low else since
    else:
        end = rows[-1][0]
    return [body for _, body in rows], end


async def versions(
    conn: aiosqlite.Connection, ds: DatasetRow, entity_id: str, history: bool
) -> list[Entity]:
    """Committed versions of one id, oldest first (only the latest unless ``history``)."""
    sql = f"SELECT body FROM {ds.log} WHERE id = ? AND off <= ? ORDER BY off DESC"
    if not history:
        sql += " LIMIT 1"
    rows = list(await conn.execute_fetchall(sql, (entity_id, ds.committed)))
    return [orjson.loads(r[0]) for r in reversed(rows)]


async def latest_of(conn: aiosqlite.Connection, ds: DatasetRow, ids: Sequence[str]) -> list[Entity]:
    """Committed latest versions of ``ids`` (those the dataset has), in the order of ``ids``."""
    found: dict[str, Entity] = {}
    for listed, params in each(ids):
        rows = await conn.execute_fetchall(
            f"SELECT x.id, l.body FROM {listed} j JOIN {ds.latest} x ON x.id = j.value "
            f"JOIN {ds.log} l ON l.off = x.off WHERE x.off <= ?", (*params, ds.committed))
        found.update((r[0], orjson.loads(r[1])) for r in rows)
    return [found[i] for i in ids if i in found]


async def rollback_held(conn: aiosqlite.Connection, ds: DatasetRow) -> int:
    """Delete versions above the committed offset and rebuild the index of the ids they touched."""
    held = await conn.execute_fetchall(f"SELECT DISTINCT id FROM {ds.log} WHERE off > ?", (ds.committed,))
    ids = [r[0] for r in held]
    gone = [r[0] for r in await conn.execute_fetchall(f"DELETE FROM {ds.log} WHERE off > ? RETURNING off",
                                                        (ds.committed,))]
    removed = len(gone)
    await forget_seen(conn, ds, gone)
    for part in chunks(ids):
        q = marks(len(part))
        await conn.execute(f"DELETE FROM {ds.latest} WHERE id IN ({q})", part)
        await conn.execute(
            f"INSERT INTO {ds.latest}(id, off, hash, deleted, seen) "
            f"SELECT id, off, json_extract(CAST(body AS TEXT), '$._hash'), "  # a BLOB would be JSONB to SQLite 3.45+
            f"coalesce(json_extract(CAST(body AS TEXT), '$._deleted'), 0) = 1, NULL FROM {ds.log} l "
            f"WHERE id IN ({q}) AND off = (SELECT max(off) FROM {ds.log} m WHERE m.id = l.id)",
            part,
        )
    await ixsql.refresh(conn, ds, ids)
    ds.next_offset = ds.committed + 1
    ds.ids, ds.deleted = await counts(conn, ds)
    return removed


async def revert_run(conn: aiosqlite.Connection, ds: DatasetRow, run_offset: int, pipe: str) -> int:
    """Revert what a run made visible (versions from ``run_offset`` to the committed offset; the
    breaker must be reset and held versions gone): each id it touched gets a new version equal to
    its newest version before ``run_offset``, or a ``_deleted`` one if the run created it. Returns
    how many versions were written."""
    ids = [r[0] for r in await conn.execute_fetchall(
        f"SELECT DISTINCT id FROM {ds.log} WHERE off >= ? AND off <= ?", (run_offset, ds.committed))]
    reverted: list[Entity] = []
    for part in chunks(ids):
        rows = await conn.execute_fetchall(
            f"SELECT id, body FROM {ds.log} l WHERE id IN ({marks(len(part))}) AND off = "
            f"(SELECT max(m.off) FROM {ds.log} m WHERE m.id = l.id AND m.off < ?)", (*part, run_offset),
        )
        before = {eid: orjson.loads(body) for eid, body in rows}
        reverted.extend(before.get(eid, {"_id": eid, "_deleted": True}) for eid in part)
    if not reverted:
        return 0
    result = await write(conn, ds, reverted, pipe=pipe, checkpoint=None, previous=Checkpoint(),
                         sweep=None, keep_versions=None, change_limit=None)
    return result.changes


async def visible_counts(conn: aiosqlite.Connection, ds: DatasetRow) -> tuple[int, int]:
    """(ids, deleted ids) as readers see them: without the versions held above the committed
    offset (the latest-version index already counts those)."""
    row = await fetch_one(
        conn,
        f"SELECT coalesce(sum(v.off IS NULL), 0), coalesce(sum(x.deleted), 0), "
        f"coalesce(sum(json_extract(CAST(v.body AS TEXT), '$._deleted') = 1), 0) "
        f"FROM {ds.latest} x LEFT JOIN {ds.log} v ON v.off = "
        f"(SELECT max(m.off) FROM {ds.log} m WHERE m.id = x.id AND m.off <= ?) WHERE x.off > ?",
        (ds.committed, ds.committed),
    )
    assert row is not None  # an aggregate always returns one row
    unseen_ids, held_deleted, visible_deleted = (int(v) for v in row)
    return ds.ids - unseen_ids, ds.deleted - held_deleted + visible_deleted


async def counts(conn: aiosqlite.Connection, ds: DatasetRow) -> tuple[int, int]:
    """(ids, deleted ids) in the latest-version index."""
    row = await fetch_one(conn, f"SELECT count(*), coalesce(sum(deleted), 0) FROM {ds.latest}")
    assert row is not None  # an aggregate always returns one row
    return int(row[0]), int(row[1])
