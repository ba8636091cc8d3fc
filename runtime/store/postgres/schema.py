"""The PostgreSQL store's schema, its version and its migrations.

Unlike the SQLite store (two tables per dataset), every dataset shares one set of tables keyed
by the dataset's integer ``ds``: a new dataset needs no DDL inside a write transaction.

* Entity ids, unit keys and join keys are ``bytea`` (their UTF-8 bytes): PostgreSQL ``text``
  cannot hold NUL, and bytewise order is SQLite's ``BINARY`` order, so ``ORDER BY`` agrees.
* Names (pipes, datasets) are ``text COLLATE "C"`` (bytewise order, whatever the server locale).
* JSON values (since, checkpoints, info, log data) are ``text`` as orjson writes it: ``jsonb``
  refuses ``\\u0000``. Entity bodies are ``bytea``, returned as stored.

The version lives in ``sluice_schema``; :func:`migrate` runs under a transaction-level advisory
lock, so daemons opening one store at once migrate it once.
"""

from __future__ import annotations

import asyncpg

from runtime.errors import StoreError
from runtime.store.postgres.cluster import SCHEMA as CLUSTER
from runtime.store.postgres.datasets import RUN_FLOORS
from runtime.store.postgres.tracking import SCHEMA as TRACKING

SCHEMA_VERSION = 4
MIGRATION_LOCK = 0x5117CE  # pg_advisory_xact_lock key held while a store is migrated

SCHEMA = """
CREATE TABLE datasets(
    ds serial PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE, committed bigint NOT NULL,
    next bigint NOT NULL, populated boolean NOT NULL, trip text, created_us bigint,
    ids bigint NOT NULL DEFAULT 0, deleted bigint NOT NULL DEFAULT 0, indexes text);
CREATE TABLE log(
    ds integer NOT NULL, off bigint NOT NULL, id bytea NOT NULL, body bytea NOT NULL,
    PRIMARY KEY(ds, off));
CREATE INDEX log_id ON log(ds, id, off);
CREATE TABLE latest(
    ds integer NOT NULL, id bytea NOT NULL, off bigint NOT NULL, hash text NOT NULL,
    deleted boolean NOT NULL, seen bigint, PRIMARY KEY(ds, id));
CREATE TABLE seen(ds integer NOT NULL, off bigint NOT NULL, sweep bigint NOT NULL, PRIMARY KEY(ds, off));
CREATE TABLE hix(
    ds integer NOT NULL, path text COLLATE "C" NOT NULL, key bytea NOT NULL, id bytea NOT NULL,
    PRIMARY KEY(ds, path, key, id));
CREATE INDEX hix_id ON hix(ds, id);
CREATE TABLE pipes(
    pipe text COLLATE "C" PRIMARY KEY, since text, sweep bigint, info text NOT NULL DEFAULT '{}');
CREATE TABLE work_units(
    pipe text COLLATE "C" NOT NULL, key bytea NOT NULL, status text NOT NULL, attempts integer NOT NULL,
    checkpoint text, watermark text, lease_owner text, lease_expiry_us bigint, last_error text,
    vars text, due_us bigint, swept bigint, retired boolean NOT NULL DEFAULT false,
    closed boolean NOT NULL DEFAULT false, PRIMARY KEY(pipe, key))
    WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
CREATE INDEX work_units_status ON work_units(pipe, status, key);
CREATE TABLE entity_retries(
    pipe text COLLATE "C" NOT NULL, key bytea NOT NULL, entity bytea NOT NULL, attempts integer NOT NULL,
    last_error text NOT NULL, run_id text NOT NULL, PRIMARY KEY(pipe, key));
CREATE TABLE exec_log(
    seq bigserial PRIMARY KEY, pipe text COLLATE "C" NOT NULL, run_id text NOT NULL,
    ts_us bigint NOT NULL, event text NOT NULL, data text NOT NULL);
CREATE INDEX exec_log_pipe ON exec_log(pipe, seq);
CREATE TABLE consumers(dataset text COLLATE "C" NOT NULL, pipe text COLLATE "C" NOT NULL, PRIMARY KEY(dataset, pipe));
CREATE TABLE pipe_locks(pipe text COLLATE "C" PRIMARY KEY, holder text NOT NULL);
"""

MIGRATIONS: dict[int, str] = {2: TRACKING, 3: CLUSTER, 4: RUN_FLOORS}
"""Version N-1 -> N: the statements that bring a store of version N-1 to N (2: the dependency
tracking tables; 3: cluster members, leases and the work units' lease epoch; 4: the run floors
compaction keeps)."""


async def migrate(conn: asyncpg.Connection, label: str) -> None:
    """Create the schema in an empty database, or bring an older one to :data:`SCHEMA_VERSION`.

    Raises:
        StoreError: the database holds a schema of a newer Sluice.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        exists = await conn.fetchval("SELECT to_regclass('sluice_schema') IS NOT NULL")
        if not exists:
            await conn.execute(SCHEMA + TRACKING + CLUSTER + RUN_FLOORS)
            await conn.execute("CREATE TABLE sluice_schema(version integer NOT NULL)")
            await conn.execute("INSERT INTO sluice_schema(version) VALUES ($1)", SCHEMA_VERSION)
            return
        version = await conn.fetchval("SELECT max(version) FROM sluice_schema") or 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"state store {label} has schema version {version}, written by a newer Sluice "
                             f"(this one knows {SCHEMA_VERSION}); upgrade Sluice to use it")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[step])
        if version < SCHEMA_VERSION:
            await conn.execute("UPDATE sluice_schema SET version = $1", SCHEMA_VERSION)
