"""SQLite implementation of :class:`~runtime.store.protocol.StateStore` on aiosqlite (WAL).

One writer connection (transactions serialised by a lock, ``BEGIN IMMEDIATE``) and one reader
connection, so readers never wait for a write transaction. ``synchronous=NORMAL`` in WAL mode: a
committed transaction survives a process crash (SIGKILL); the last transactions may be lost only
on power loss.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
import orjson

from runtime.dtl.joinkeys import path_name
from runtime.entities import Entity, PreparedBatch
from runtime.errors import OperationRefusedError, PipeTrippedError, StoreError
from runtime.store import _sqlite_datasets as dsql
from runtime.store import _sqlite_indexes as ixsql
from runtime.store import _sqlite_tracking as tsql
from runtime.store import _sqlite_units as usql
from runtime.store._sqlite_datasets import fetch_one
from runtime.store.protocol import (
    Checkpoint,
    DatasetInfo,
    Dependency,
    LogEvent,
    PipeState,
    RunStart,
    WorkUnit,
    WriteResult,
)

SCHEMA_VERSION = 7
SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets(
    ds INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, committed INTEGER NOT NULL,
    next INTEGER NOT NULL, populated INTEGER NOT NULL, trip TEXT, created_us INTEGER,
    ids INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, indexes TEXT);
CREATE TABLE IF NOT EXISTS pipes(
    pipe TEXT PRIMARY KEY, since TEXT, sweep INTEGER, info TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS work_units(
    pipe TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    checkpoint TEXT, watermark TEXT, lease_owner TEXT, lease_expiry_us INTEGER, last_error TEXT,
    vars TEXT, due_us INTEGER, swept INTEGER, retired INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(pipe, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS work_units_status ON work_units(pipe, status, key);
CREATE TABLE IF NOT EXISTS entity_retries(
    pipe TEXT NOT NULL, key TEXT NOT NULL, entity BLOB NOT NULL, attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY(pipe, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exec_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, pipe TEXT NOT NULL, run_id TEXT NOT NULL,
    ts_us INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS exec_log_pipe ON exec_log(pipe, seq);
CREATE TABLE IF NOT EXISTS consumers(
    dataset TEXT NOT NULL, pipe TEXT NOT NULL, PRIMARY KEY(dataset, pipe)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_floors(
    ds INTEGER NOT NULL, pipe TEXT NOT NULL, off INTEGER NOT NULL, PRIMARY KEY(ds, pipe)) WITHOUT ROWID;
"""

_SEENLESS = "SELECT ds FROM datasets WHERE NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'seen_' || ds)"
"""Datasets without their ``seen_N`` table (see :meth:`SqliteStore._migrate`)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _translated(func: F) -> F:
    """Translate sqlite3 errors of a store method into StoreError naming the method and file."""

    @functools.wraps(func)
    async def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await func(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {func.__name__} failed: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


class SqliteStore:
    """State store in one SQLite file.

    Args:
        path: database file; its directory is created if missing. ``":memory:"`` is refused
            (two connections must see the same data).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        """Open both connections and create the schema.

        Raises:
            StoreError: the file cannot be opened or is not a Sluice database.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "cache_size=-32768"):
                await self._writer.execute(f"PRAGMA {pragma}")
            await self._writer.executescript(SCHEMA + tsql.SCHEMA)
            await self._migrate()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA busy_timeout=10000")
            await self._reader.execute("PRAGMA cache_size=-16384")
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open state store {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        """Bring a store written by an older Sluice to ``SCHEMA_VERSION`` (``PRAGMA user_version``).

        Raises:
            StoreError: the store was written by a newer Sluice (a higher schema version).
        """
        conn = self._w
        row = await fetch_one(conn, "PRAGMA user_version")
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"state store {self.path} has schema version {version}, written by a newer Sluice "
                             f"(this one knows {SCHEMA_VERSION}); upgrade Sluice to use it")
        if version == SCHEMA_VERSION and not await conn.execute_fetchall(_SEENLESS):
            return  # nothing to do: no write transaction
        async with self._transaction() as tx:
            if version < 1:  # version 0 -> 1: id and deletion counters per dataset
                await self._add_counters(tx)
            # version 1 -> 2: the entity_retries table, created by SCHEMA above
            # version 3 -> 4: the consumers table, created by SCHEMA above
            if version < 5:  # version 4 -> 5: variables, due time, sweep and retirement of work units
                await usql.add_columns(tx)
            if version < 6:  # version 5 -> 6: the hop index paths of each dataset
                await self._add_indexes_column(tx)
            # version 6 -> 7: the deps and tracking tables (dependency tracking), created by tsql.SCHEMA
            # version 2 -> 3: a seen_N table per dataset. Checked on every open, not only on the
            # upgrade: a Sluice of schema 2 opening this store afterwards creates datasets without one.
            for (key,) in await tx.execute_fetchall(_SEENLESS):
                await dsql.create_seen(tx, key)
            if version < SCHEMA_VERSION:
                await tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    async def _add_counters(tx: aiosqlite.Connection) -> None:
        columns = {r[1] for r in await tx.execute_fetchall("PRAGMA table_info(datasets)")}
        if "ids" in columns:  # a new store: SCHEMA created them
            return
        await tx.execute("ALTER TABLE datasets ADD COLUMN ids INTEGER NOT NULL DEFAULT 0")
        await tx.execute("ALTER TABLE datasets ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")
        for (key,) in await tx.execute_fetchall("SELECT ds FROM datasets"):
            await tx.execute(
                f"UPDATE datasets SET (ids, deleted) = (SELECT count(*), coalesce(sum(deleted), 0) "
                f"FROM latest_{int(key)}) WHERE ds = ?", (key,),
            )

    @staticmethod
    async def _add_indexes_column(tx: aiosqlite.Connection) -> None:
        columns = {r[1] for r in await tx.execute_fetchall("PRAGMA table_info(datasets)")}
        if "indexes" not in columns:  # an older store (a new one has it from SCHEMA)
            await tx.execute("ALTER TABLE datasets ADD COLUMN indexes TEXT")

    async def close(self) -> None:
        """Close both connections; safe to call twice."""
        for attr in ("_reader", "_writer"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                await conn.close()

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError(f"state store {self.path} is not open; call open() first")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError(f"state store {self.path} is not open; call open() first")
        return self._reader

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed on exit, rolled back on any exception."""
        async with self._lock:
            conn = self._w
            try:
                with anyio.CancelScope(shield=True):  # a BEGIN must never be left behind
                    await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a transaction on {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True):  # a batch and its checkpoint: all or nothing
                try:
                    await conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    await conn.execute("ROLLBACK")
                    raise StoreError(f"commit failed on {self.path}: {exc}") from exc

    # -- datasets ---------------------------------------------------------------------------
    async def write_batch(
        self,
        dataset: str,
        entities: Sequence[Entity] | PreparedBatch,
        *,
        pipe: str,
        checkpoint: Checkpoint | None,
        sweep: int | None = None,
        keep_versions: int | None = 2,
        change_limit: int | None = None,
        populate: bool = False,
        run_start: RunStart | None = None,
    ) -> WriteResult:
        """See :meth:`StateStore.write_batch`."""
        try:
            async with self._transaction() as conn:
                ds = await dsql.find_or_create(conn, dataset)
                previous = await self._checkpoint_in(conn, pipe)
                hold = await dsql.hold_of(conn, ds) if keep_versions is not None else dsql.NO_HOLD
                result = await dsql.write(
                    conn, ds, entities, pipe=pipe, checkpoint=checkpoint, previous=previous,
                    sweep=sweep, keep_versions=keep_versions, change_limit=change_limit,
                    run_start=run_start, hold=hold,
                )
                if checkpoint is not None:
                    await self._put_checkpoint(conn, pipe, checkpoint)
                if populate and not ds.populated:
                    ds.populated = True
                    await dsql.save_row(conn, ds)
                return result
        except sqlite3.Error as exc:
            raise StoreError(f"writing to dataset {dataset!r} failed: {exc}", pipe=pipe) from exc

    @_translated
    async def unseen(self, dataset: str, sweep: int, limit: int) -> list[Entity]:
        """See :meth:`StateStore.unseen`."""
        ds = await dsql.find(self._r, dataset)
        return [] if ds is None else await dsql.unseen(self._r, ds, sweep, limit)

    @_translated
    async def count_unseen(self, dataset: str, sweep: int) -> int:
        """See :meth:`StateStore.count_unseen`."""
        ds = await dsql.find(self._r, dataset)
        return 0 if ds is None else await dsql.count_unseen(self._r, ds, sweep)

    @_translated
    async def set_populated(self, dataset: str) -> None:
        """See :meth:`StateStore.set_populated`."""
        async with self._transaction() as conn:
            ds = await dsql.find_or_create(conn, dataset)
            ds.populated = True
            await dsql.save_row(conn, ds)

    @_translated
    async def read(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[Entity], int | None]:
        """See :meth:`StateStore.read`."""
        ds = await dsql.find(self._r, dataset)
        if ds is None:
            return [], since
        return await dsql.read(self._r, ds, since, limit, history)

    @_translated
    async def read_bodies(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[bytes], int | None]:
        """See :meth:`StateStore.read_bodies`."""
        ds = await dsql.find(self._r, dataset)
        if ds is None:
            return [], since
        return await dsql.read_bodies(self._r, ds, since, limit, history)

    @_translated
    async def get(self, dataset: str, entity_id: str, *, history: bool = False) -> list[Entity]:
        """See :meth:`StateStore.get`."""
        ds = await dsql.find(self._r, dataset)
        return [] if ds is None else await dsql.versions(self._r, ds, entity_id, history)

    @_translated
    async def latest_versions(self, dataset: str, ids: Sequence[str]) -> list[Entity]:
        """See :meth:`StateStore.latest_versions`."""
        ds = await dsql.find(self._r, dataset)
        return [] if ds is None or not ids else await dsql.latest_of(self._r, ds, ids)

    @_translated
    async def dataset_info(self, dataset: str) -> DatasetInfo | None:
        """See :meth:`StateStore.dataset_info`."""
        ds = await dsql.find(self._r, dataset)
        if ds is None:
            return None
        ids, deleted, held = ds.ids, ds.deleted, ds.next_offset - 1 - ds.committed
        if held:
            ids, deleted = await dsql.visible_counts(self._r, ds)
        holds = tuple(h for h in await dsql.holders(self._r, ds.name) if h[1] < ds.committed)
        return DatasetInfo(ds.name, ds.committed, ds.next_offset, ds.populated, ids, deleted, ds.trip, held, holds)

    @_translated
    async def datasets(self) -> list[DatasetInfo]:
        """See :meth:`StateStore.datasets`."""
        names = [r[0] for r in await self._r.execute_fetchall("SELECT name FROM datasets ORDER BY name")]
        infos = [await self.dataset_info(n) for n in names]
        return [i for i in infos if i is not None]

    @_translated
    async def ensure_index(self, dataset: str, path: Sequence[str]) -> bool:
        """See :meth:`StateStore.ensure_index`."""
        name = path_name(path)
        ds = await dsql.find(self._r, dataset)
        if ds is not None and name in ds.indexes:
            return True
        async with self._transaction() as conn:
            ds = await dsql.find(conn, dataset)
            if ds is None:
                return False
            if name not in ds.indexes:
                await ixsql.create(conn, ds, name)
            return True

    @_translated
    async def index_lookup(self, dataset: str, path: Sequence[str], keys: Sequence[str], *,
                           parse: Callable[[bytes], Entity] = orjson.loads) -> dict[str, list[Entity]]:
        """See :meth:`StateStore.index_lookup`."""
        ds = await dsql.indexed(self._r, dataset, path) if keys else None
        if ds is None:
            return {}
        found = await ixsql.lookup(self._r, ds, path_name(path), keys)
        return {key: [parse(b) for b in bodies] for key, bodies in found.items()}

    @_translated
    async def index_page(self, dataset: str, path: Sequence[str], key: str, *, after: str | None,
                         limit: int) -> list[Entity]:
        """See :meth:`StateStore.index_page`."""
        ds = await dsql.indexed(self._r, dataset, path)
        return [] if ds is None else [orjson.loads(b) for b in await ixsql.page(self._r, ds, path_name(path), key,
                                                                                  after, limit)]

    # -- dependency tracking ------------------------------------------------------------------
    @_translated
    async def record_dependencies(self, pipe: str, dependencies: Mapping[str, Collection[Dependency]]) -> None:
        """See :meth:`StateStore.record_dependencies`."""
        if dependencies:
            async with self._transaction() as conn:
                await tsql.record(conn, pipe, dependencies)

    @_translated
    async def tracked_sources(self, pipe: str, dataset: str, after: int, upto: int, limit: int) -> list[str]:
        """See :meth:`StateStore.tracked_sources`."""
        ds = await dsql.find(self._r, dataset)
        return [] if ds is None else await tsql.sources(self._r, pipe, ds, after, upto, limit)

    @_translated
    async def tracked_joins(self, pipe: str, dataset: str, after: int, upto: int,
                            top: int) -> list[tuple[str, str, int]]:
        """See :meth:`StateStore.tracked_joins`."""
        ds = await dsql.find(self._r, dataset)
        return [] if ds is None else await tsql.joins(self._r, pipe, ds, after, upto, top)

    @_translated
    async def compact(self, dataset: str, keep_versions: int) -> int:
        """See :meth:`StateStore.compact`."""
        async with self._transaction() as conn:
            ds = await dsql.find(conn, dataset)
            if ds is None:
                return 0
            if ds.trip is not None:
                raise PipeTrippedError(
                    f"dataset {dataset!r} has a tripped circuit breaker; commit or roll it back "
                    "before compacting", pipe=ds.trip.pipe,
                )
            return await dsql.compact_all(conn, ds, keep_versions, hold=await dsql.hold_of(conn, ds))

    @_translated
    async def commit_breaker(self, dataset: str, keep_versions: int | None = None) -> int:
        """See :meth:`StateStore.commit_breaker`."""
        async with self._transaction() as conn:
            ds = await self._tripped(conn, dataset)
            exposed = ds.next_offset - 1 - ds.committed
            if keep_versions is not None:
                rows = await conn.execute_fetchall(f"SELECT DISTINCT id FROM {ds.log} WHERE off > ?", (ds.committed,))
                held = [r[0] for r in rows]
                await dsql.compact_ids(conn, ds, held, keep_versions, hold=await dsql.hold_of(conn, ds))
            ds.committed = ds.next_offset - 1
            ds.trip = None
            await dsql.save_row(conn, ds)
            return exposed

    @_translated
    async def rollback_breaker(self, dataset: str) -> int:
        """See :meth:`StateStore.rollback_breaker`."""
        async with self._transaction() as conn:
            ds = await self._tripped(conn, dataset)
            trip = ds.trip
            assert trip is not None  # _tripped() checked it
            removed = await dsql.rollback_held(conn, ds)
            ds.trip = None
            await dsql.save_row(conn, ds)
            if trip.run_offset is not None:
                removed += await dsql.revert_run(conn, ds, trip.run_offset, trip.pipe)
            await self._put_checkpoint(conn, trip.pipe, Checkpoint(trip.since, trip.sweep, tracking=trip.tracking))
            await usql.restart_all(conn, trip.pipe)
            return removed

    @_translated
    async def set_consumers(self, consumers: dict[str, list[str]]) -> None:
        """See :meth:`StateStore.set_consumers`."""
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM consumers")
            await conn.executemany("INSERT OR IGNORE INTO consumers(dataset, pipe) VALUES (?, ?)",
                                   [(ds, p) for ds, pipes in consumers.items() for p in pipes])

    @_translated
    async def compaction_holds(self, dataset: str) -> list[tuple[str, int]]:
        """See :meth:`StateStore.compaction_holds`."""
        return await dsql.holders(self._r, dataset)

    async def _tripped(self, conn: aiosqlite.Connection, dataset: str) -> dsql.DatasetRow:
        ds = await dsql.find(conn, dataset)
        if ds is None or ds.trip is None:
            raise OperationRefusedError(
                f"dataset {dataset!r} has no tripped circuit breaker; nothing to commit or roll back"
            )
        return ds

    # -- pipes ---------------------------------------------------------------------------------
    async def _checkpoint_in(self, conn: aiosqlite.Connection, pipe: str) -> Checkpoint:
        row = await fetch_one(conn, "SELECT since, sweep FROM pipes WHERE pipe = ?", (pipe,))
        return Checkpoint() if row is None else Checkpoint(_unjson(row[0]), row[1])

    async def _put_checkpoint(self, conn: aiosqlite.Connection, pipe: str, cp: Checkpoint) -> None:
        await conn.execute(
            "INSERT INTO pipes(pipe, since, sweep) VALUES (?, ?, ?) ON CONFLICT(pipe) "
            "DO UPDATE SET since = excluded.since, sweep = excluded.sweep",
            (pipe, _json(cp.since), cp.sweep),
        )
        if cp.units:
            await usql.apply(conn, pipe, cp.units)
        if cp.tracking:
            await tsql.put_offsets(conn, pipe, cp.tracking)
        if cp.dependencies:
            await tsql.record(conn, pipe, cp.dependencies)

    @_translated
    async def pipe_state(self, pipe: str) -> PipeState:
        """See :meth:`StateStore.pipe_state`."""
        row = await fetch_one(self._r, "SELECT pipe, since, sweep, info FROM pipes WHERE pipe = ?", (pipe,))
        tracking = await tsql.offsets(self._r, pipe)
        if row is None:
            return PipeState(pipe, tracking=tracking)
        return PipeState(row[0], _unjson(row[1]), row[2], orjson.loads(row[3]), tracking)

    @_translated
    async def pipe_states(self) -> list[PipeState]:
        """See :meth:`StateStore.pipe_states`."""
        rows = await self._r.execute_fetchall("SELECT pipe, since, sweep, info FROM pipes ORDER BY pipe")
        tracking = await tsql.all_offsets(self._r)
        return [PipeState(r[0], _unjson(r[1]), r[2], orjson.loads(r[3]), tracking.get(r[0], {})) for r in rows]

    @_translated
    async def save_checkpoint(self, pipe: str, checkpoint: Checkpoint) -> None:
        """See :meth:`StateStore.save_checkpoint`."""
        async with self._transaction() as conn:
            await self._put_checkpoint(conn, pipe, checkpoint)

    @_translated
    async def update_pipe_info(self, pipe: str, changes: dict[str, Any]) -> PipeState:
        """See :meth:`StateStore.update_pipe_info`."""
        async with self._transaction() as conn:
            await self._merge_info(conn, pipe, lambda _info: changes)
        return await self.pipe_state(pipe)

    @_translated
    async def record_run(
        self, pipe: str, run_id: str, event: str, data: dict[str, Any],
        update: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        """See :meth:`StateStore.record_run`."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO exec_log(pipe, run_id, ts_us, event, data) VALUES (?, ?, ?, ?, ?)",
                (pipe, run_id, dsql.now_us(), event, orjson.dumps(data).decode()),
            )
            await self._merge_info(conn, pipe, update)

    async def _merge_info(
        self, conn: aiosqlite.Connection, pipe: str, update: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        row = await fetch_one(conn, "SELECT info FROM pipes WHERE pipe = ?", (pipe,))
        info = orjson.loads(row[0]) if row else {}
        info.update(update(info))
        await conn.execute(
            "INSERT INTO pipes(pipe, info) VALUES (?, ?) ON CONFLICT(pipe) DO UPDATE SET info = excluded.info",
            (pipe, orjson.dumps(info).decode()),
        )

    @asynccontextmanager
    async def pipe_lock(self, pipe: str, holder: str = "") -> AsyncIterator[None]:
        """See :meth:`StateStore.pipe_lock`: an exclusive ``flock`` on ``<db>.locks/<pipe>.lock``,
        released by the kernel if the process dies; the file names the holder and its process."""
        folder = self.path.with_name(self.path.name + ".locks")
        folder.mkdir(exist_ok=True)
        path = folder / f"{pipe}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another run"
                raise OperationRefusedError(
                    f"already running or busy: {who} holds {path}; wait for it to finish or stop it",
                    pipe=pipe,
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder or 'a run'} (process {os.getpid()})".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @_translated
    async def reset_pipe(self, pipe: str, since: Any = None) -> None:
        """See :meth:`StateStore.reset_pipe`."""
        await self.save_checkpoint(pipe, Checkpoint(since, None))

    # -- execution log --------------------------------------------------------------------------
    @_translated
    async def log_event(self, pipe: str, run_id: str, event: str, data: dict[str, Any]) -> None:
        """See :meth:`StateStore.log_event`."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO exec_log(pipe, run_id, ts_us, event, data) VALUES (?, ?, ?, ?, ?)",
                (pipe, run_id, dsql.now_us(), event, orjson.dumps(data).decode()),
            )

    @_translated
    async def execution_log(
        self, pipe: str, *, since: int | None = None, limit: int = 100, before: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEvent]:
        """See :meth:`StateStore.execution_log`."""
        order = "DESC" if newest_first else "ASC"
        rows = await self._r.execute_fetchall(
            "SELECT seq, pipe, run_id, ts_us, event, data FROM exec_log WHERE pipe = ? AND seq > ?"
            f" AND seq < ? ORDER BY seq {order} LIMIT ?",
            (pipe, since or 0, 2**63 - 1 if before is None else before, limit),
        )
        return [LogEvent(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    # -- entity retries (dead letters) ---------------------------------------------------------
    @_translated
    async def record_entity_failure(
        self, pipe: str, key: str, entity: Entity, error: str, run_id: str
    ) -> int:
        """See :meth:`StateStore.record_entity_failure`."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO entity_retries(pipe, key, entity, attempts, last_error, run_id) "
                "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(pipe, key) DO UPDATE SET entity = excluded.entity, "
                "last_error = excluded.last_error, attempts = attempts + (run_id != excluded.run_id), "
                "run_id = excluded.run_id",
                (pipe, key, orjson.dumps(entity, default=repr), error, run_id),
            )
            row = await fetch_one(conn, "SELECT attempts FROM entity_retries WHERE pipe = ? AND key = ?", (pipe, key))
        return int(row[0]) if row else 1

    @_translated
    async def entity_retries(self, pipe: str) -> list[tuple[str, Entity, int, str]]:
        """See :meth:`StateStore.entity_retries`."""
        rows = await self._r.execute_fetchall(
            "SELECT key, entity, attempts, last_error FROM entity_retries WHERE pipe = ? ORDER BY key", (pipe,)
        )
        return [(r[0], orjson.loads(r[1]), r[2], r[3]) for r in rows]

    @_translated
    async def clear_entity_retries(self, pipe: str, keys: Sequence[str]) -> None:
        """See :meth:`StateStore.clear_entity_retries`."""
        async with self._transaction() as conn:
            for part in dsql.chunks(list(keys)):
                await conn.execute(
                    f"DELETE FROM entity_retries WHERE pipe = ? AND key IN ({dsql.marks(len(part))})", (pipe, *part)
                )

    # -- work units ---------------------------------------------------------------------------
    @_translated
    async def plan_units(self, pipe: str, units: Sequence[tuple[str, dict[str, Any], bool]]) -> tuple[int, int]:
        """See :meth:`StateStore.plan_units`."""
        async with self._transaction() as conn:
            return await usql.plan(conn, pipe, units)

    @_translated
    async def prepare_units(self, pipe: str, *, sweep: int | None) -> None:
        """See :meth:`StateStore.prepare_units`."""
        async with self._transaction() as conn:
            await usql.prepare(conn, pipe, sweep)

    @_translated
    async def claim_units(self, pipe: str, owner: str, *, limit: int, lease_s: float) -> list[WorkUnit]:
        """See :meth:`StateStore.claim_units`."""
        async with self._transaction() as conn:
            return await usql.claim(conn, pipe, owner, limit, lease_s)

    @_translated
    async def work_units(self, pipe: str, *, status: str | None = None) -> list[WorkUnit]:
        """See :meth:`StateStore.work_units`."""
        return await usql.units(self._r, pipe, status)

    @_translated
    async def unit_counts(self, pipe: str) -> dict[str, int]:
        """See :meth:`StateStore.unit_counts`."""
        return await usql.counts(self._r, pipe)

    @_translated
    async def units_swept(self, pipe: str, sweep: int) -> bool:
        """See :meth:`StateStore.units_swept`."""
        return await usql.swept(self._r, pipe, sweep)

    @_translated
    async def retry_units(self, pipe: str, keys: Sequence[str] | None = None) -> int:
        """See :meth:`StateStore.retry_units`."""
        async with self._transaction() as conn:
            return await usql.retry(conn, pipe, keys)
