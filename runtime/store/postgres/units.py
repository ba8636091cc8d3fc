"""The work-unit ledger of the PostgreSQL store: the semantics of
:mod:`runtime.store._sqlite_units` in ``work_units``, with claims that skip rows another
transaction holds (``FOR UPDATE SKIP LOCKED``), so daemons sharing the store never claim one unit
twice and never wait for each other.

Every function takes a connection inside a transaction the caller owns (reads: any connection)
and costs a fixed number of statements (arrays bound with ``unnest``), never one per unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from runtime.store.postgres.datasets import from_json, json_text, now_us
from runtime.store.protocol import UnitProgress, WorkUnit

_FIELDS = ("pipe, key, status, attempts, checkpoint, watermark, lease_owner, lease_expiry_us, "
           "last_error, vars, due_us, swept, retired, closed")


def _unit(r: asyncpg.Record) -> WorkUnit:
    return WorkUnit(r[0], r[1].decode(), r[2], r[3], from_json(r[4]), from_json(r[5]), r[6], r[7], r[8],
                    from_json(r[9]) or {}, r[10], r[11], r[12], r[13])


def changed_rows(status: str) -> int:
    """The row count of an ``UPDATE n`` / ``DELETE n`` / ``INSERT 0 n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


def text(value: str | None) -> str | None:
    """Free text (an error message) for a ``text`` column, which cannot hold NUL: NUL as ``\\x00``."""
    return None if value is None else value.replace("\x00", "\\x00")


async def plan(
    conn: asyncpg.Connection, pipe: str, units: Sequence[tuple[str, dict[str, Any], bool]]
) -> tuple[int, int]:
    """See :meth:`StateStore.plan_units`."""
    planned = {key: (json_text(variables), bool(closed)) for key, variables, closed in units}  # a later one wins
    keys = [k.encode() for k in planned]
    rows = await conn.fetch(  # xmax = 0: the row was inserted, not updated
        "INSERT INTO work_units AS w(pipe, key, status, attempts, vars, closed, retired) "
        "SELECT $1, j.key, 'pending', 0, j.vars, j.closed, false FROM unnest($2::bytea[], $3::text[], $4::boolean[]) "
        "j(key, vars, closed) ON CONFLICT (pipe, key) DO UPDATE SET vars = excluded.vars, closed = excluded.closed, "
        "retired = false WHERE w.vars IS DISTINCT FROM excluded.vars OR w.closed <> excluded.closed OR w.retired "
        "RETURNING w.xmax = 0",
        pipe, keys, [v for v, _ in planned.values()], [c for _, c in planned.values()],
    )
    retired = await conn.execute("UPDATE work_units SET retired = true WHERE pipe = $1 AND NOT retired "
                                 "AND NOT (key = ANY($2::bytea[]))", pipe, keys)
    return sum(bool(r[0]) for r in rows), changed_rows(retired)


async def prepare(conn: asyncpg.Connection, pipe: str, sweep: int | None, *, keep_leased: bool = False) -> None:
    """See :meth:`StateStore.prepare_units`; ``keep_leased`` (cluster mode) leaves running units
    whose lease has not expired as they are (another member runs them)."""
    await conn.execute("UPDATE work_units SET status = 'pending', lease_owner = NULL, lease_expiry_us = NULL "
                       "WHERE pipe = $1 AND status = 'running' AND NOT ($2 AND lease_expiry_us >= $3)",
                       pipe, keep_leased, now_us())
    if sweep is not None:
        await conn.execute("UPDATE work_units SET status = 'pending', checkpoint = NULL WHERE pipe = $1 "
                           "AND NOT retired AND status = 'done' AND swept IS DISTINCT FROM $2", pipe, sweep)
    else:
        await conn.execute("UPDATE work_units SET status = 'pending', checkpoint = NULL WHERE pipe = $1 "
                           "AND NOT retired AND status = 'done' AND NOT closed", pipe)


async def claim(conn: asyncpg.Connection, pipe: str, owner: str, limit: int, lease_s: float) -> list[WorkUnit]:
    """See :meth:`StateStore.claim_units`: pending units first, then due failed or waiting ones,
    then running ones whose lease expired (SQLite's order), each group by key; rows locked by
    another claim are skipped."""
    now = now_us()
    rows = await conn.fetch(
        "WITH c AS (SELECT key FROM work_units WHERE pipe = $1 AND NOT retired AND (status = 'pending' "
        "OR (status IN ('failed', 'waiting') AND coalesce(due_us, 0) <= $2) "
        "OR (status = 'running' AND lease_expiry_us < $2)) "
        "ORDER BY CASE status WHEN 'pending' THEN 0 WHEN 'running' THEN 2 ELSE 1 END, key LIMIT $3 "
        "FOR UPDATE SKIP LOCKED) "
        "UPDATE work_units w SET status = 'running', lease_owner = $4, lease_expiry_us = $5 FROM c "
        f"WHERE w.pipe = $1 AND w.key = c.key RETURNING {', '.join('w.' + f for f in _FIELDS.split(', '))}",
        pipe, now, limit, owner, now + int(lease_s * 1e6),
    )
    return sorted((_unit(r) for r in rows), key=lambda u: u.key.encode())


async def apply(conn: asyncpg.Connection, pipe: str, progress: dict[str, UnitProgress]) -> None:
    """Write units' progress (inside the transaction of the entities it covers)."""
    ok = [(k.encode(), p) for k, p in progress.items() if p.status in ("running", "done", "waiting")]
    bad = [(k.encode(), p) for k, p in progress.items() if p.status in ("failed", "dead")]
    if ok:
        await conn.execute(
            "UPDATE work_units w SET status = j.status, checkpoint = j.cp, watermark = coalesce(j.wm, w.watermark), "
            "due_us = j.due, swept = coalesce(j.swept, w.swept), "
            "last_error = CASE WHEN j.status = 'done' THEN NULL ELSE w.last_error END, "
            "attempts = CASE WHEN j.status = 'done' THEN 0 ELSE w.attempts END, "
            "lease_owner = CASE WHEN j.status = 'running' THEN w.lease_owner END, "
            "lease_expiry_us = CASE WHEN j.status = 'running' THEN w.lease_expiry_us END "
            "FROM unnest($2::bytea[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) "
            "j(key, status, cp, wm, due, swept) WHERE w.pipe = $1 AND w.key = j.key",
            pipe, [k for k, _ in ok], [p.status for _, p in ok], [json_text(p.checkpoint) for _, p in ok],
            [json_text(p.watermark) for _, p in ok], [p.due_us for _, p in ok], [p.swept for _, p in ok],
        )
    if bad:
        await conn.execute(
            "UPDATE work_units w SET status = j.status, last_error = j.error, due_us = j.due, "
            "attempts = w.attempts + 1, checkpoint = coalesce(j.cp, w.checkpoint), "
            "watermark = coalesce(j.wm, w.watermark), lease_owner = NULL, lease_expiry_us = NULL "
            "FROM unnest($2::bytea[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[]) "
            "j(key, status, error, due, cp, wm) WHERE w.pipe = $1 AND w.key = j.key",
            pipe, [k for k, _ in bad], [p.status for _, p in bad], [text(p.error) for _, p in bad],
            [p.due_us for _, p in bad], [json_text(p.checkpoint) for _, p in bad],
            [json_text(p.watermark) for _, p in bad],
        )


async def units(conn: asyncpg.Connection, pipe: str, status: str | None) -> list[WorkUnit]:
    """See :meth:`StateStore.work_units`."""
    if status == "retired":
        rows = await conn.fetch(f"SELECT {_FIELDS} FROM work_units WHERE pipe = $1 AND retired ORDER BY key", pipe)
    elif status is None:
        rows = await conn.fetch(f"SELECT {_FIELDS} FROM work_units WHERE pipe = $1 AND NOT retired ORDER BY key",
                                pipe)
    else:
        rows = await conn.fetch(f"SELECT {_FIELDS} FROM work_units WHERE pipe = $1 AND NOT retired "
                                "AND status = $2 ORDER BY key", pipe, status)
    return [_unit(r) for r in rows]


async def counts(conn: asyncpg.Connection, pipe: str) -> dict[str, int]:
    """See :meth:`StateStore.unit_counts`."""
    rows = await conn.fetch("SELECT CASE WHEN retired THEN 'retired' ELSE status END, count(*) FROM work_units "
                            "WHERE pipe = $1 GROUP BY 1", pipe)
    return {r[0]: int(r[1]) for r in rows}


async def swept(conn: asyncpg.Connection, pipe: str, sweep: int) -> bool:
    """See :meth:`StateStore.units_swept`."""
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM work_units WHERE pipe = $1 AND NOT retired "
                                   "AND (status <> 'done' OR swept IS DISTINCT FROM $2))", pipe, sweep)


async def retry(conn: asyncpg.Connection, pipe: str, keys: Sequence[str] | None) -> int:
    """See :meth:`StateStore.retry_units`."""
    sql = ("UPDATE work_units SET status = 'pending', attempts = 0, due_us = NULL WHERE pipe = $1 "
           "AND NOT retired AND status IN ('dead', 'failed')")
    if keys is None:
        return changed_rows(await conn.execute(sql, pipe))
    return changed_rows(await conn.execute(f"{sql} AND key = ANY($2::bytea[])", pipe, [k.encode() for k in keys]))


async def restart_all(conn: asyncpg.Connection, pipe: str) -> None:
    """After a circuit-breaker rollback: every unit reads its whole range again."""
    await conn.execute("UPDATE work_units SET status = 'pending', checkpoint = NULL, watermark = NULL, swept = NULL "
                       "WHERE pipe = $1 AND NOT retired", pipe)
