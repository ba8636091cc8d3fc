"""PostgreSQL implementation of :class:`~runtime.store.protocol.StateStore` on an asyncpg pool.

Every method is one short transaction (or one autocommit read) on a pooled connection; no
transaction stays open across a call to a source or a target, since the store is only called
between them. Writers of one dataset are serialised by its ``datasets`` row lock; everything
else runs in parallel, so several processes can share one database (the SQLite store serialises
every write in one process). Pipe locks are session advisory locks, released by the server when
the holding process dies (its connection closes).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import asyncpg
import orjson
from yarl import URL

from runtime.dtl.joinkeys import path_name
from runtime.entities import Entity, PreparedBatch
from runtime.errors import FencedError, LeaseHeldError, OperationRefusedError, PipeTrippedError, StoreError
from runtime.store.postgres import cluster as cpg
from runtime.store.postgres import datasets as dpg
from runtime.store.postgres import indexes as ixpg
from runtime.store.postgres import tracking as tpg
from runtime.store.postgres import units as upg
from runtime.store.postgres.datasets import from_json, json_text, now_us
from runtime.store.postgres.schema import migrate
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

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
"""What asyncpg raises when a statement or the connection fails (a refused or lost connection is
an OSError)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _translated(func: F) -> F:
    """Translate database errors of a store method into StoreError naming the method and server."""

    @functools.wraps(func)
    async def wrapper(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await func(self, *args, **kwargs)
        except DB_ERRORS as exc:
            raise StoreError(f"state store {self.label}: {func.__name__} failed: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class PostgresStore:
    """State store in one PostgreSQL database (schema in :mod:`runtime.store.postgres.schema`).

    Args:
        dsn: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?...]`` (libpq URI syntax, as
            asyncpg reads it); the database must exist, the schema is created on open.
        pool_size: most connections the pool opens (pipe locks take one more each, while held).
    """

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        url = URL(dsn)
        self.label = str(url.with_password("***")) if url.password else dsn
        self._pool: asyncpg.Pool | None = None
        self.cluster: cpg.Membership | None = None
        self._listener: asyncpg.Connection | None = None
        """Set by ``sluice serve`` (:mod:`runtime.cluster`): the store is then a cluster member's,
        pipe runs are claimed by leases and their commits fenced (see :meth:`pipe_lock`)."""

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    async def open(self) -> None:
        """Open the pool and create or migrate the schema.

        Raises:
            StoreError: the server cannot be reached, refuses the login, or holds a schema of a
                newer Sluice.
        """
        try:
            self._pool = await self._new_pool()
            async with self._pool.acquire() as conn:
                await migrate(conn, self.label)
        except DB_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot open state store {self.label}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _new_pool(self) -> asyncpg.Pool:
        """A pool of connections. A cluster member's sessions end when idle in a transaction
        longer than the lease (it froze mid-transaction): the server rolls it back, releasing its
        locks, so a frozen member never blocks the others longer than its leases last. A startup
        parameter: the pool's ``RESET ALL`` on release keeps it (it undid a ``SET``)."""
        settings = {} if self.cluster is None else {
            "idle_in_transaction_session_timeout": str(int(self.cluster.lease_s * 1000))}
        return await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size, server_settings=settings)

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await pool.close()

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"state store {self.label} is not open; call open() first")
        return self._pool

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for autocommit reads."""
        async with self._p.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction: committed on exit, rolled back on any exception (cancellation too)."""
        async with self._p.acquire() as conn:
            tx = conn.transaction()
            with anyio.CancelScope(shield=True):  # a BEGIN must never be left behind
                await tx.start()
            try:
                yield conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await tx.rollback()
                raise
            with anyio.CancelScope(shield=True):  # a batch and its checkpoint: all or nothing
                await tx.commit()

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
                await self._fence(conn, pipe, checkpoint)
                ds = await dpg.find_or_create(conn, dataset)
                previous = await self._checkpoint_in(conn, pipe)
                hold = await dpg.hold_of(conn, ds) if keep_versions is not None else dpg.NO_HOLD
                result = await dpg.write(
                    conn, ds, entities, pipe=pipe, checkpoint=checkpoint, previous=previous,
                    sweep=sweep, keep_versions=keep_versions, change_limit=change_limit,
                    run_start=run_start, hold=hold,
                )
                if checkpoint is not None:
                    await self._put_checkpoint(conn, pipe, checkpoint)
                if populate and not ds.populated:
                    ds.populated = True
                    await dpg.save_row(conn, ds)
                if result.changes:
                    await cpg.notify(conn, "dataset", dataset)
            self._settle(pipe, checkpoint)
            return result
        except DB_ERRORS as exc:
            raise StoreError(f"writing to dataset {dataset!r} failed: {exc}", pipe=pipe) from exc

    @_translated
    async def unseen(self, dataset: str, sweep: int, limit: int) -> list[Entity]:
        """See :meth:`StateStore.unseen`."""
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
            return [] if ds is None else await dpg.unseen(conn, ds, sweep, limit)

    @_translated
    async def count_unseen(self, dataset: str, sweep: int) -> int:
        """See :meth:`StateStore.count_unseen`."""
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
            return 0 if ds is None else await dpg.count_unseen(conn, ds, sweep)

    @_translated
    async def set_populated(self, dataset: str) -> None:
        """See :meth:`StateStore.set_populated`."""
        async with self._transaction() as conn:
            ds = await dpg.find_or_create(conn, dataset)
            ds.populated = True
            await dpg.save_row(conn, ds)

    @_translated
    async def read(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[Entity], int | None]:
        """See :meth:`StateStore.read`."""
        bodies, end = await self.read_bodies(dataset, since=since, limit=limit, history=history)
        return [orjson.loads(body) for body in bodies], end

    @_translated
    async def read_bodies(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[bytes], int | None]:
        """See :meth:`StateStore.read_bodies` (one repeatable-read snapshot: the dataset row and
        the versions agree)."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            ds = await dpg.find(conn, dataset)
            if ds is None:
                return [], since
            return await dpg.read_bodies(conn, ds, since, limit, history)

    @_translated
    async def get(self, dataset: str, entity_id: str, *, history: bool = False) -> list[Entity]:
        """See :meth:`StateStore.get`."""
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
            return [] if ds is None else await dpg.versions(conn, ds, entity_id, history)

    @_translated
    async def latest_versions(self, dataset: str, ids: Sequence[str]) -> list[Entity]:
        """See :meth:`StateStore.latest_versions`."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            ds = await dpg.find(conn, dataset)
            if ds is None or not ids:
                return []
            rows = await conn.fetch("SELECT x.id, l.body FROM latest x JOIN log l ON l.ds = x.ds AND l.off = x.off "
                                    "WHERE x.ds = $1 AND x.id = ANY($2::bytea[]) AND x.off <= $3",
                                    ds.key, [i.encode() for i in ids], ds.committed)
        found = {r[0].decode(): orjson.loads(r[1]) for r in rows}
        return [found[i] for i in ids if i in found]

    # -- dependency tracking ------------------------------------------------------------------
    @_translated
    async def record_dependencies(self, pipe: str, dependencies: Mapping[str, Collection[Dependency]]) -> None:
        """See :meth:`StateStore.record_dependencies`."""
        if dependencies:
            async with self._transaction() as conn:
                await tpg.record(conn, pipe, dependencies)

    @_translated
    async def tracked_sources(self, pipe: str, dataset: str, after: int, upto: int, limit: int) -> list[str]:
        """See :meth:`StateStore.tracked_sources`."""
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
            return [] if ds is None else await tpg.sources(conn, pipe, ds, after, upto, limit)

    @_translated
    async def tracked_joins(self, pipe: str, dataset: str, after: int, upto: int,
                            top: int) -> list[tuple[str, str, int]]:
        """See :meth:`StateStore.tracked_joins`."""
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
            return [] if ds is None else await tpg.joins(conn, pipe, ds, after, upto, top)

    @_translated
    async def dataset_info(self, dataset: str) -> DatasetInfo | None:
        """See :meth:`StateStore.dataset_info`."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await self._info(conn, dataset)

    async def _info(self, conn: asyncpg.Connection, dataset: str) -> DatasetInfo | None:
        ds = await dpg.find(conn, dataset)
        if ds is None:
            return None
        ids, deleted, held = ds.ids, ds.deleted, ds.next_offset - 1 - ds.committed
        if held:
            ids, deleted = await dpg.visible_counts(conn, ds)
        holds = tuple(h for h in await dpg.holders(conn, ds.name) if h[1] < ds.committed)
        return DatasetInfo(ds.name, ds.committed, ds.next_offset, ds.populated, ids, deleted, ds.trip, held, holds)

    @_translated
    async def datasets(self) -> list[DatasetInfo]:
        """See :meth:`StateStore.datasets`."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            names = [r[0] for r in await conn.fetch("SELECT name FROM datasets ORDER BY name")]
            infos = [await self._info(conn, n) for n in names]
        return [i for i in infos if i is not None]

    @_translated
    async def ensure_index(self, dataset: str, path: Sequence[str]) -> bool:
        """See :meth:`StateStore.ensure_index`."""
        name = path_name(path)
        async with self._read() as conn:
            ds = await dpg.find(conn, dataset)
        if ds is not None and name in ds.indexes:
            return True
        async with self._transaction() as conn:
            ds = await dpg.find(conn, dataset, lock=True)
            if ds is None:
                return False
            if name not in ds.indexes:
                await ixpg.create(conn, ds, name)
            return True

    @_translated
    async def index_lookup(self, dataset: str, path: Sequence[str], keys: Sequence[str], *,
                           parse: Callable[[bytes], Entity] = orjson.loads) -> dict[str, list[Entity]]:
        """See :meth:`StateStore.index_lookup`."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            ds = await dpg.indexed(conn, dataset, path) if keys else None
            if ds is None:
                return {}
            found = await ixpg.lookup(conn, ds, path_name(path), keys)
        return {key: [parse(b) for b in bodies] for key, bodies in found.items()}

    @_translated
    async def index_page(self, dataset: str, path: Sequence[str], key: str, *, after: str | None,
                         limit: int) -> list[Entity]:
        """See :meth:`StateStore.index_page`."""
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            ds = await dpg.indexed(conn, dataset, path)
            bodies = [] if ds is None else await ixpg.page(conn, ds, path_name(path), key, after, limit)
        return [orjson.loads(b) for b in bodies]

    @_translated
    async def compact(self, dataset: str, keep_versions: int) -> int:
        """See :meth:`StateStore.compact`."""
        async with self._transaction() as conn:
            ds = await dpg.find(conn, dataset, lock=True)
            if ds is None:
                return 0
            if ds.trip is not None:
                raise PipeTrippedError(
                    f"dataset {dataset!r} has a tripped circuit breaker; commit or roll it back "
                    "before compacting", pipe=ds.trip.pipe,
                )
            return await dpg.compact_all(conn, ds, keep_versions, hold=await dpg.hold_of(conn, ds))

    @_translated
    async def commit_breaker(self, dataset: str, keep_versions: int | None = None) -> int:
        """See :meth:`StateStore.commit_breaker`."""
        async with self._transaction() as conn:
            ds = await self._tripped(conn, dataset)
            exposed = ds.next_offset - 1 - ds.committed
            if keep_versions is not None:
                rows = await conn.fetch("SELECT DISTINCT id FROM log WHERE ds = $1 AND off > $2", ds.key, ds.committed)
                held = [r[0].decode() for r in rows]
                await dpg.compact_ids(conn, ds, held, keep_versions, hold=await dpg.hold_of(conn, ds))
            ds.committed = ds.next_offset - 1
            ds.trip = None
            await dpg.save_row(conn, ds)
            return exposed

    @_translated
    async def rollback_breaker(self, dataset: str) -> int:
        """See :meth:`StateStore.rollback_breaker`."""
        async with self._transaction() as conn:
            ds = await self._tripped(conn, dataset)
            trip = ds.trip
            assert trip is not None  # _tripped() checked it
            removed = await dpg.rollback_held(conn, ds)
            ds.trip = None
            await dpg.save_row(conn, ds)
            if trip.run_offset is not None:
                removed += await dpg.revert_run(conn, ds, trip.run_offset, trip.pipe)
            await self._put_checkpoint(conn, trip.pipe, Checkpoint(trip.since, trip.sweep, tracking=trip.tracking))
            await upg.restart_all(conn, trip.pipe)
            return removed

    @_translated
    async def set_consumers(self, consumers: dict[str, list[str]]) -> None:
        """See :meth:`StateStore.set_consumers`."""
        pairs = list(dict.fromkeys((ds, p) for ds, pipes in consumers.items() for p in pipes))
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM consumers")
            await conn.execute("INSERT INTO consumers(dataset, pipe) SELECT * FROM unnest($1::text[], $2::text[])",
                               [d for d, _ in pairs], [p for _, p in pairs])

    @_translated
    async def compaction_holds(self, dataset: str) -> list[tuple[str, int]]:
        """See :meth:`StateStore.compaction_holds`."""
        async with self._read() as conn:
            return await dpg.holders(conn, dataset)

    async def _tripped(self, conn: asyncpg.Connection, dataset: str) -> dpg.DatasetRow:
        ds = await dpg.find(conn, dataset, lock=True)
        if ds is None or ds.trip is None:
            raise OperationRefusedError(
                f"dataset {dataset!r} has no tripped circuit breaker; nothing to commit or roll back"
            )
        return ds

    # -- pipes ---------------------------------------------------------------------------------
    async def _checkpoint_in(self, conn: asyncpg.Connection, pipe: str) -> Checkpoint:
        row = await conn.fetchrow("SELECT since, sweep FROM pipes WHERE pipe = $1", pipe)
        return Checkpoint() if row is None else Checkpoint(from_json(row[0]), row[1])

    async def _put_checkpoint(self, conn: asyncpg.Connection, pipe: str, cp: Checkpoint) -> None:
        await conn.execute(
            "INSERT INTO pipes(pipe, since, sweep) VALUES ($1, $2, $3) ON CONFLICT (pipe) "
            "DO UPDATE SET since = excluded.since, sweep = excluded.sweep", pipe, json_text(cp.since), cp.sweep,
        )
        if cp.units:
            await upg.apply(conn, pipe, cp.units)
        if cp.tracking:
            await tpg.put_offsets(conn, pipe, cp.tracking)
        if cp.dependencies:
            await tpg.record(conn, pipe, cp.dependencies)

    @staticmethod
    def _state(r: asyncpg.Record, tracking: dict[str, int]) -> PipeState:
        return PipeState(r[0], from_json(r[1]), r[2], orjson.loads(r[3]), tracking)

    @_translated
    async def pipe_state(self, pipe: str) -> PipeState:
        """See :meth:`StateStore.pipe_state`."""
        async with self._read() as conn:
            row = await conn.fetchrow("SELECT pipe, since, sweep, info FROM pipes WHERE pipe = $1", pipe)
            tracking = (await tpg.offsets(conn, pipe)).get(pipe, {})
        return PipeState(pipe, tracking=tracking) if row is None else self._state(row, tracking)

    @_translated
    async def pipe_states(self) -> list[PipeState]:
        """See :meth:`StateStore.pipe_states`."""
        async with self._read() as conn:
            rows = await conn.fetch("SELECT pipe, since, sweep, info FROM pipes ORDER BY pipe")
            tracking = await tpg.offsets(conn)
        return [self._state(r, tracking.get(r[0], {})) for r in rows]

    @_translated
    async def save_checkpoint(self, pipe: str, checkpoint: Checkpoint) -> None:
        """See :meth:`StateStore.save_checkpoint`."""
        async with self._transaction() as conn:
            await self._fence(conn, pipe, checkpoint)
            await self._put_checkpoint(conn, pipe, checkpoint)
        self._settle(pipe, checkpoint)

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
            await self._log(conn, pipe, run_id, event, data)
            await self._merge_info(conn, pipe, update)

    async def _merge_info(
        self, conn: asyncpg.Connection, pipe: str, update: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        await conn.execute("INSERT INTO pipes(pipe) VALUES ($1) ON CONFLICT (pipe) DO NOTHING", pipe)
        raw = await conn.fetchval("SELECT info FROM pipes WHERE pipe = $1 FOR UPDATE", pipe)
        info = orjson.loads(raw)
        info.update(update(info))
        await conn.execute("UPDATE pipes SET info = $2 WHERE pipe = $1", pipe, orjson.dumps(info).decode())

    @asynccontextmanager
    async def pipe_lock(self, pipe: str, holder: str = "") -> AsyncIterator[None]:
        """See :meth:`StateStore.pipe_lock`. Outside a cluster: a session advisory lock on a
        connection of its own (outside the pool), held while the block runs and released by the
        server when that connection closes, also when the process dies; ``pipe_locks`` names the
        holder; refused while a cluster member holds the pipe's lease. In a cluster member's store:
        the pipe's lease (:meth:`_leased`)."""
        if self.cluster is not None:
            async with self._leased(pipe, holder):
                yield
            return
        try:
            conn = await asyncpg.connect(self.dsn)
        except DB_ERRORS as exc:
            raise StoreError(f"state store {self.label}: cannot take the lock of pipe {pipe!r}: {exc}",
                             pipe=pipe) from exc
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", cpg.lock_key(pipe)):
                who = await conn.fetchval("SELECT holder FROM pipe_locks WHERE pipe = $1", pipe) or "another run"
                raise OperationRefusedError(
                    f"already running or busy: {who} holds the lock of pipe {pipe!r} in {self.label}; "
                    "wait for it to finish or stop it", pipe=pipe,
                )
            name = f"{holder or 'a run'} (process {os.getpid()} on {socket.gethostname()})"
            await conn.execute("INSERT INTO pipe_locks(pipe, holder) VALUES ($1, $2) ON CONFLICT (pipe) "
                               "DO UPDATE SET holder = excluded.holder", pipe, upg.text(name))
            leased = await cpg.holder_of(conn, f"pipe:{pipe}")
            if leased is not None:
                raise LeaseHeldError(f"pipe {pipe!r} is running in the cluster sharing {self.label} "
                                     f"({leased}); wait for it to finish or stop it there", pipe=pipe)
            yield
        finally:
            with anyio.CancelScope(shield=True):  # closing the session releases the lock
                await conn.close()

    @asynccontextmanager
    async def _leased(self, pipe: str, holder: str) -> AsyncIterator[None]:
        """A cluster member's pipe lock: the lease ``pipe:<id>`` (owner, epoch, expiry), renewed by
        the member's heartbeat (:mod:`runtime.cluster`) and checked by every commit of the run.

        A pipe with work units is shared: when another member holds its lease (or left it
        expired, unreleased) this member joins that run, claiming units but neither planning nor
        preparing them. Its held units are released when the block ends.

        Raises:
            LeaseHeldError: another member runs the pipe (not shared), or a process outside the
                cluster (``sluice run``) holds its advisory lock.
        """
        member = self.cluster
        assert member is not None
        name, shared = f"pipe:{pipe}", pipe in member.shared
        try:
            async with self._transaction() as conn:
                taken = await cpg.take(conn, name, member.member, holder or "a run", member.lease_s)
                who = None if taken is not None else await cpg.holder_of(conn, name)
            async with self._transaction() as conn:  # a transaction lock: a frozen member's ends with it
                outside = not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", cpg.lock_key(pipe))
        except DB_ERRORS as exc:
            raise StoreError(f"state store {self.label}: cannot take the lease of pipe {pipe!r}: {exc}",
                             pipe=pipe) from exc
        if taken is not None and outside:
            await self._release_lease(name, taken.epoch)
        if outside:
            raise LeaseHeldError(f"pipe {pipe!r} is run by a process outside the cluster (sluice run?) "
                                 f"on {self.label}; wait for it to finish", pipe=pipe)
        if taken is None and not shared:
            raise LeaseHeldError(f"pipe {pipe!r} is running on another cluster member ({who or 'just now'}); "
                                 "it runs once in the cluster at a time", pipe=pipe)
        if taken is not None:
            member.leases[name] = taken.epoch
        if taken is None or taken.resumed:
            member.helping.add(pipe)
        try:
            yield
        finally:
            member.helping.discard(pipe)
            held = member.units.pop(pipe, {})
            with anyio.CancelScope(shield=True):
                try:
                    if held:
                        async with self._transaction() as conn:
                            await cpg.release_units(conn, pipe, member.member, held)
                    if taken is not None:
                        member.leases.pop(name, None)
                        await self._release_lease(name, taken.epoch)
                except DB_ERRORS:  # the leases expire instead
                    pass

    async def _release_lease(self, name: str, epoch: int) -> None:
        assert self.cluster is not None
        async with self._read() as conn:
            await cpg.release(conn, name, self.cluster.member, epoch)

    async def _fence(self, conn: asyncpg.Connection, pipe: str, checkpoint: Checkpoint | None) -> None:
        """In a cluster member's store, inside a commit: refuse it (FencedError, the transaction
        rolls back) unless the member still holds, with the same epoch, the units of a shared pipe
        it holds and those the checkpoint moves, or the lease of any other pipe it runs."""
        member = self.cluster
        if member is None:
            return
        if pipe in member.shared:
            held = dict(member.units.get(pipe, {}))  # a snapshot: claims go on during the awaits below
            moved = set(checkpoint.units or {}) if checkpoint is not None else set()
            lost = sorted(moved - set(held)) + (await cpg.hold_units(conn, pipe, member.member, held) if held else [])
            if lost:
                now = await cpg.unit_holders(conn, pipe, lost[:5])
                mine = ", ".join(f"{k} (held at epoch {held.get(k)}; now {now.get(k, 'gone')})" for k in lost[:5])
                raise FencedError(
                    f"member {member.member} lost the lease of work unit(s) {mine}: it expired and another "
                    "member took them; this commit is refused and its work dropped", pipe=pipe)
            return
        epoch = member.leases.get(f"pipe:{pipe}")
        if epoch is not None and not await cpg.hold_lease(conn, f"pipe:{pipe}", member.member, epoch):
            raise FencedError(
                f"member {member.member} lost the lease of its run of pipe {pipe!r} (epoch {epoch}; it expired and "
                "another member took it); this commit is refused and its work dropped", pipe=pipe)

    def _settle(self, pipe: str, checkpoint: Checkpoint | None) -> None:
        """After a fenced commit: units that left ``running`` are no longer held."""
        if self.cluster is None or checkpoint is None or not checkpoint.units:
            return
        held = self.cluster.units.get(pipe, {})
        for key, progress in checkpoint.units.items():
            if progress.status != "running":
                held.pop(key, None)

    # -- cluster --------------------------------------------------------------------------------
    def _member(self) -> cpg.Membership:
        if self.cluster is None:
            raise StoreError(f"state store {self.label}: this process is not a cluster member")
        return self.cluster

    async def cluster_sessions(self) -> None:
        """After :attr:`cluster` is set: replace the pool, so every session has the member's
        settings (:meth:`_new_pool`)."""
        old, self._pool = self._p, await self._new_pool()
        await old.close()

    @_translated
    async def cluster_listen(self, on_change: Callable[[str, str], None]) -> Callable[[], Awaitable[None]]:
        """Listen for the changes every store on this database announces (:func:`cpg.notify`):
        ``on_change(kind, name)`` with kind ``dataset`` (committed changes to that dataset) or
        ``units`` (units added to that pipe). Returns the coroutine function that stops
        listening; the listening connection is a dedicated one (see :meth:`listening`)."""
        conn = self._listener = await cpg.listen(self.dsn, on_change)

        async def stop() -> None:
            self._listener = None
            with anyio.CancelScope(shield=True):
                await conn.close()

        return stop

    def listening(self) -> bool:
        """Whether the connection of :meth:`cluster_listen` is still open (it closes when the
        server restarts; listen again then)."""
        return self._listener is not None and not self._listener.is_closed()

    @_translated
    async def cluster_heartbeat(self) -> list[str]:
        """Record the member's heartbeat and renew its leases and units (one transaction); take
        the ``leader`` lease if it is free or expired. Returns the leases lost (``pipe:<id>``,
        ``unit:<pipe>/<key>``)."""
        m = self._member()
        async with self._transaction() as conn:
            await cpg.heartbeat(conn, m.member, m.host, m.pid, m.port, m.started_us)
            leases = dict(m.leases)  # snapshots: leases are taken and units claimed during the awaits
            lost, lost_units = await cpg.renew(conn, m.member, leases, {p: dict(h) for p, h in m.units.items()},
                                               m.lease_s)
        for name in lost:
            if m.leases.get(name) == leases[name]:  # not taken again meanwhile
                del m.leases[name]
        if "leader" in lost or "leader" not in m.leases:
            async with self._transaction() as conn:
                taken = await cpg.take(conn, "leader", m.member, "the leader", m.lease_s)
            if taken is not None:
                m.leases["leader"] = taken.epoch
        m.leader = "leader" in m.leases
        return lost + [f"unit:{pipe}/{key}" for pipe, key in lost_units]

    @_translated
    async def cluster_leave(self) -> None:
        """A clean stop of the member: its leases and units released, its row removed."""
        m = self._member()
        async with self._transaction() as conn:
            await cpg.leave(conn, m.member)
        m.leases.clear()
        m.units.clear()
        m.leader = False

    @_translated
    async def cluster_joinable(self) -> list[str]:
        """Shared pipes whose run another member started, with units ready to claim."""
        m = self._member()
        async with self._read() as conn:
            return await cpg.joinable(conn, sorted(m.shared), m.member)

    @_translated
    async def cluster_overview(self) -> dict[str, Any]:
        """Members, their heartbeats and what each holds (see :func:`cpg.overview`)."""
        async with self._read() as conn:
            return await cpg.overview(conn, self._member().lease_s)

    @_translated
    async def reset_pipe(self, pipe: str, since: Any = None) -> None:
        """See :meth:`StateStore.reset_pipe`."""
        await self.save_checkpoint(pipe, Checkpoint(since, None))

    # -- execution log --------------------------------------------------------------------------
    @staticmethod
    async def _log(conn: asyncpg.Connection, pipe: str, run_id: str, event: str, data: dict[str, Any]) -> None:
        await conn.execute("INSERT INTO exec_log(pipe, run_id, ts_us, event, data) VALUES ($1, $2, $3, $4, $5)",
                           pipe, run_id, now_us(), event, orjson.dumps(data).decode())

    @_translated
    async def log_event(self, pipe: str, run_id: str, event: str, data: dict[str, Any]) -> None:
        """See :meth:`StateStore.log_event`."""
        async with self._read() as conn:  # one statement: autocommit
            await self._log(conn, pipe, run_id, event, data)

    @_translated
    async def execution_log(
        self, pipe: str, *, since: int | None = None, limit: int = 100, before: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEvent]:
        """See :meth:`StateStore.execution_log`."""
        order = "DESC" if newest_first else "ASC"
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT seq, pipe, run_id, ts_us, event, data FROM exec_log WHERE pipe = $1 AND seq > $2 "
                f"AND seq < $3 ORDER BY seq {order} LIMIT $4",
                pipe, since or 0, 2**63 - 1 if before is None else before, limit,
            )
        return [LogEvent(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    # -- entity retries (dead letters) ---------------------------------------------------------
    @_translated
    async def record_entity_failure(
        self, pipe: str, key: str, entity: Entity, error: str, run_id: str
    ) -> int:
        """See :meth:`StateStore.record_entity_failure`."""
        async with self._read() as conn:  # one statement: autocommit
            attempts = await conn.fetchval(
                "INSERT INTO entity_retries AS r(pipe, key, entity, attempts, last_error, run_id) "
                "VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (pipe, key) DO UPDATE SET entity = excluded.entity, "
                "last_error = excluded.last_error, attempts = r.attempts + (r.run_id <> excluded.run_id)::int, "
                "run_id = excluded.run_id RETURNING attempts",
                pipe, key.encode(), orjson.dumps(entity, default=repr), upg.text(error), run_id,
            )
        return int(attempts)

    @_translated
    async def entity_retries(self, pipe: str) -> list[tuple[str, Entity, int, str]]:
        """See :meth:`StateStore.entity_retries`."""
        async with self._read() as conn:
            rows = await conn.fetch("SELECT key, entity, attempts, last_error FROM entity_retries WHERE pipe = $1 "
                                    "ORDER BY key", pipe)
        return [(r[0].decode(), orjson.loads(r[1]), r[2], r[3]) for r in rows]

    @_translated
    async def clear_entity_retries(self, pipe: str, keys: Sequence[str]) -> None:
        """See :meth:`StateStore.clear_entity_retries`."""
        async with self._read() as conn:
            await conn.execute("DELETE FROM entity_retries WHERE pipe = $1 AND key = ANY($2::bytea[])",
                               pipe, [k.encode() for k in keys])

    # -- work units ---------------------------------------------------------------------------
    @_translated
    async def plan_units(self, pipe: str, units: Sequence[tuple[str, dict[str, Any], bool]]) -> tuple[int, int]:
        """See :meth:`StateStore.plan_units` (a cluster member that joined another's run: nothing)."""
        if self.cluster is not None and pipe in self.cluster.helping:
            return 0, 0
        async with self._transaction() as conn:
            added, retired = await upg.plan(conn, pipe, units)
            if added:
                await cpg.notify(conn, "units", pipe)
            return added, retired

    @_translated
    async def prepare_units(self, pipe: str, *, sweep: int | None) -> None:
        """See :meth:`StateStore.prepare_units` (a cluster member that joined another's run:
        nothing; a member starting a run keeps the units other members hold running)."""
        if self.cluster is not None and pipe in self.cluster.helping:
            return
        async with self._transaction() as conn:
            await upg.prepare(conn, pipe, sweep, keep_leased=self.cluster is not None)

    @_translated
    async def claim_units(self, pipe: str, owner: str, *, limit: int, lease_s: float) -> list[WorkUnit]:
        """See :meth:`StateStore.claim_units` (``FOR UPDATE SKIP LOCKED``: concurrent claims never
        take one unit twice and never wait for each other). In a cluster member's store the owner
        is the member, the lease its ``lease_s`` (renewed by its heartbeat), each claim increments
        the unit's epoch, and the pipe's ``max_concurrent_units`` holds across the cluster
        (:func:`runtime.store.postgres.cluster.claim`)."""
        member = self.cluster
        if member is None:
            async with self._transaction() as conn:
                return await upg.claim(conn, pipe, owner, limit, lease_s)
        async with self._transaction() as conn:
            claimed = await cpg.claim(conn, pipe, member.member, limit, member.lease_s, member.limits.get(pipe))
        held = member.units.setdefault(pipe, {})
        held.update((unit.key, epoch) for unit, epoch in claimed)
        return [unit for unit, _ in claimed]

    @_translated
    async def work_units(self, pipe: str, *, status: str | None = None) -> list[WorkUnit]:
        """See :meth:`StateStore.work_units`."""
        async with self._read() as conn:
            return await upg.units(conn, pipe, status)

    @_translated
    async def unit_counts(self, pipe: str) -> dict[str, int]:
        """See :meth:`StateStore.unit_counts`."""
        async with self._read() as conn:
            return await upg.counts(conn, pipe)

    @_translated
    async def units_swept(self, pipe: str, sweep: int) -> bool:
        """See :meth:`StateStore.units_swept`."""
        async with self._read() as conn:
            return await upg.swept(conn, pipe, sweep)

    @_translated
    async def retry_units(self, pipe: str, keys: Sequence[str] | None = None) -> int:
        """See :meth:`StateStore.retry_units`."""
        async with self._transaction() as conn:
            return await upg.retry(conn, pipe, keys)
