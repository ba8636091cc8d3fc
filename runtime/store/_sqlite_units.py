"""The work-unit ledger of the SQLite store (DIL's work units, with Sluice's per-unit checkpoints).

One row per (pipe, key) in ``work_units``. Every function takes a connection inside a
transaction the caller owns (reads: any connection); each costs a fixed number of statements,
never one round trip per unit: 100,000 units plan, claim and finish in a few batched statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite
import orjson

from runtime.store._sqlite_bulk import json_param
from runtime.store._sqlite_datasets import chunks, fetch_one, marks, now_us
from runtime.store.protocol import UnitProgress, WorkUnit

COLUMNS = {  # added by schema 5 to the schema-1 table
    "vars": "TEXT", "due_us": "INTEGER", "swept": "INTEGER",
    "retired": "INTEGER NOT NULL DEFAULT 0", "closed": "INTEGER NOT NULL DEFAULT 0",
}
_SELECT = ("SELECT pipe, key, status, attempts, checkpoint, watermark, lease_owner, lease_expiry_us, "
           "last_error, vars, due_us, swept, retired, closed FROM work_units")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _unit(r: Sequence[Any]) -> WorkUnit:
    return WorkUnit(r[0], r[1], r[2], r[3], _unjson(r[4]), _unjson(r[5]), r[6], r[7], r[8],
                    _unjson(r[9]) or {}, r[10], r[11], bool(r[12]), bool(r[13]))


INDEX = "CREATE INDEX IF NOT EXISTS work_units_status ON work_units(pipe, status, key)"


async def add_columns(conn: aiosqlite.Connection) -> None:
    """Schema 4 -> 5: the columns :data:`COLUMNS` on an older ``work_units`` table, and the index
    claims use."""
    have = {r[1] for r in await conn.execute_fetchall("PRAGMA table_info(work_units)")}
    for name, decl in COLUMNS.items():
        if name not in have:
            await conn.execute(f"ALTER TABLE work_units ADD COLUMN {name} {decl}")
    await conn.execute(INDEX)


async def plan(
    conn: aiosqlite.Connection, pipe: str, units: Sequence[tuple[str, dict[str, Any], bool]]
) -> tuple[int, int]:
    """See :meth:`StateStore.plan_units`."""
    before = await _count(conn, pipe)
    upsert = ("ON CONFLICT(pipe, key) DO UPDATE SET vars = excluded.vars, closed = excluded.closed, retired = 0 "
              "WHERE vars IS NOT excluded.vars OR closed != excluded.closed OR retired != 0")
    payload = json_param({key: [variables, int(closed)] for key, variables, closed in units})
    if payload is not None:  # one statement: the per-unit work runs in SQLite's C code
        await conn.execute(
            "INSERT INTO work_units(pipe, key, status, attempts, vars, closed, retired) SELECT ?, j.key, "
            "'pending', 0, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), 0 "
            f"FROM json_each(?) j WHERE true {upsert}", (pipe, payload),
        )
        cur = await conn.execute(
            "UPDATE work_units SET retired = 1 WHERE pipe = ? AND retired = 0 "
            "AND key NOT IN (SELECT key FROM json_each(?))", (pipe, payload),
        )
    else:
        await conn.executemany(
            f"INSERT INTO work_units(pipe, key, status, attempts, vars, closed, retired) "
            f"VALUES (?, ?, 'pending', 0, ?, ?, 0) {upsert}",
            [(pipe, key, orjson.dumps(variables).decode(), int(closed)) for key, variables, closed in units],
        )
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS planned_units(key TEXT PRIMARY KEY) WITHOUT ROWID")
        await conn.execute("DELETE FROM planned_units")
        await conn.executemany("INSERT OR IGNORE INTO planned_units(key) VALUES (?)", [(u[0],) for u in units])
        cur = await conn.execute(
            "UPDATE work_units SET retired = 1 WHERE pipe = ? AND retired = 0 "
            "AND key NOT IN (SELECT key FROM planned_units)", (pipe,),
        )
        await conn.execute("DELETE FROM planned_units")
    added = await _count(conn, pipe) - before
    return added, max(cur.rowcount, 0)


async def _count(conn: aiosqlite.Connection, pipe: str) -> int:
    row = await fetch_one(conn, "SELECT count(*) FROM work_units WHERE pipe = ?", (pipe,))
    return int(row[0]) if row else 0


async def prepare(conn: aiosqlite.Connection, pipe: str, sweep: int | None) -> None:
    """See :meth:`StateStore.prepare_units`."""
    await conn.execute(
        "UPDATE work_units SET status = 'pending', lease_owner = NULL, lease_expiry_us = NULL "
        "WHERE pipe = ? AND status = 'running'", (pipe,),
    )
    if sweep is not None:
        await conn.execute(
            "UPDATE work_units SET status = 'pending', checkpoint = NULL WHERE pipe = ? AND retired = 0 "
            "AND status = 'done' AND swept IS NOT ?", (pipe, sweep),
        )
    else:
        await conn.execute(
            "UPDATE work_units SET status = 'pending', checkpoint = NULL WHERE pipe = ? AND retired = 0 "
            "AND status = 'done' AND closed = 0", (pipe,),
        )


async def claim(conn: aiosqlite.Connection, pipe: str, owner: str, limit: int, lease_s: float) -> list[WorkUnit]:
    """See :meth:`StateStore.claim_units` (one SELECT over three index ranges, one UPDATE ... RETURNING)."""
    now = now_us()
    rows = await conn.execute_fetchall(  # each an index range of work_units_status, never a scan of done units
        " UNION ALL ".join(
            f"SELECT * FROM (SELECT key FROM work_units INDEXED BY work_units_status WHERE pipe = ? AND {where} "
            "AND retired = 0 ORDER BY key LIMIT ?)"
            for where in ("status = 'pending'", "status IN ('failed', 'waiting') AND coalesce(due_us, 0) <= ?",
                          "status = 'running' AND lease_expiry_us < ?")
        ),
        (pipe, limit, pipe, now, limit, pipe, now, limit),
    )
    keys = [r[0] for r in rows][:limit]
    if not keys:
        return []
    claimed: list[WorkUnit] = []
    for part in chunks(keys):
        rows = await conn.execute_fetchall(
            f"UPDATE work_units SET status = 'running', lease_owner = ?, lease_expiry_us = ? "
            f"WHERE pipe = ? AND key IN ({marks(len(part))}) "
            f"RETURNING {_SELECT.removeprefix('SELECT ').removesuffix(' FROM work_units')}",
            (owner, now + int(lease_s * 1e6), pipe, *part),
        )
        claimed.extend(_unit(r) for r in rows)
    return sorted(claimed, key=lambda u: u.key)


async def apply(conn: aiosqlite.Connection, pipe: str, progress: dict[str, UnitProgress]) -> None:
    """Write units' progress (inside the transaction of the entities it covers)."""
    ok = [p for p in progress.items() if p[1].status in ("running", "done", "waiting")]
    bad = [p for p in progress.items() if p[1].status in ("failed", "dead")]
    payload = json_param({key: [p.status, _json(p.checkpoint), _json(p.watermark), p.due_us, p.swept]
                        for key, p in ok}) if ok else None
    if payload is not None:  # one statement: the per-unit work runs in SQLite's C code
        await conn.execute(  # MATERIALIZED: the planner then loops over the batch, one key lookup each
            "WITH j(key, value) AS MATERIALIZED (SELECT key, value FROM json_each(?)) "
            "UPDATE work_units SET status = j.value ->> 0, checkpoint = j.value ->> 1, "
            "watermark = coalesce(j.value ->> 2, watermark), due_us = j.value ->> 3, "
            "swept = coalesce(j.value ->> 4, swept), "
            "last_error = CASE WHEN j.value ->> 0 = 'done' THEN NULL ELSE last_error END, "
            "attempts = CASE WHEN j.value ->> 0 = 'done' THEN 0 ELSE attempts END, "
            "lease_owner = CASE WHEN j.value ->> 0 = 'running' THEN lease_owner END, "
            "lease_expiry_us = CASE WHEN j.value ->> 0 = 'running' THEN lease_expiry_us END "
            "FROM j WHERE work_units.pipe = ? AND work_units.key = j.key",
            (payload, pipe),
        )
    elif ok:  # an id with NUL: bound row by row
        await conn.executemany(
            "UPDATE work_units SET status = ?, checkpoint = ?, watermark = coalesce(?, watermark), "
            "due_us = ?, swept = coalesce(?, swept), last_error = CASE WHEN ? = 'done' THEN NULL ELSE last_error END, "
            "attempts = CASE WHEN ? = 'done' THEN 0 ELSE attempts END, "
            "lease_owner = CASE WHEN ? = 'running' THEN lease_owner END, "
            "lease_expiry_us = CASE WHEN ? = 'running' THEN lease_expiry_us END WHERE pipe = ? AND key = ?",
            [(p.status, _json(p.checkpoint), _json(p.watermark), p.due_us, p.swept, p.status, p.status,
              p.status, p.status, pipe, key) for key, p in ok],
        )
    if bad:
        await conn.executemany(
            "UPDATE work_units SET status = ?, last_error = ?, due_us = ?, attempts = attempts + 1, "
            "checkpoint = coalesce(?, checkpoint), watermark = coalesce(?, watermark), "
            "lease_owner = NULL, lease_expiry_us = NULL WHERE pipe = ? AND key = ?",
            [(p.status, p.error, p.due_us, _json(p.checkpoint), _json(p.watermark), pipe, key) for key, p in bad],
        )


async def units(conn: aiosqlite.Connection, pipe: str, status: str | None) -> list[WorkUnit]:
    """See :meth:`StateStore.work_units`."""
    if status == "retired":
        rows = await conn.execute_fetchall(f"{_SELECT} WHERE pipe = ? AND retired = 1 ORDER BY key", (pipe,))
    elif status is None:
        rows = await conn.execute_fetchall(f"{_SELECT} WHERE pipe = ? AND retired = 0 ORDER BY key", (pipe,))
    else:
        rows = await conn.execute_fetchall(
            f"{_SELECT} WHERE pipe = ? AND retired = 0 AND status = ? ORDER BY key", (pipe, status))
    return [_unit(r) for r in rows]


async def counts(conn: aiosqlite.Connection, pipe: str) -> dict[str, int]:
    """See :meth:`StateStore.unit_counts`."""
    rows = await conn.execute_fetchall(
        "SELECT CASE WHEN retired THEN 'retired' ELSE status END, count(*) FROM work_units WHERE pipe = ? GROUP BY 1",
        (pipe,),
    )
    return {r[0]: int(r[1]) for r in rows}


async def swept(conn: aiosqlite.Connection, pipe: str, sweep: int) -> bool:
    """See :meth:`StateStore.units_swept`."""
    row = await fetch_one(
        conn, "SELECT EXISTS (SELECT 1 FROM work_units WHERE pipe = ? AND retired = 0 "
        "AND (status != 'done' OR swept IS NOT ?))", (pipe, sweep),
    )
    return not (row and row[0])


async def retry(conn: aiosqlite.Connection, pipe: str, keys: Sequence[str] | None) -> int:
    """See :meth:`StateStore.retry_units`."""
    sql = ("UPDATE work_units SET status = 'pending', attempts = 0, due_us = NULL WHERE pipe = ? "
           "AND retired = 0 AND status IN ('dead', 'failed')")
    if keys is None:
        cur = await conn.execute(sql, (pipe,))
        return max(cur.rowcount, 0)
    n = 0
    for part in chunks(list(keys)):
        cur = await conn.execute(f"{sql} AND key IN ({marks(len(part))})", (pipe, *part))
        n += max(cur.rowcount, 0)
    return n


async def restart_all(conn: aiosqlite.Connection, pipe: str) -> None:
    """After a circuit-breaker rollback: every unit reads its whole range again (checkpoint and
    watermark cleared), since the rolled-back versions may have come from any of them."""
    await conn.execute(
        "UPDATE work_units SET status = 'pending', checkpoint = NULL, watermark = NULL, swept = NULL "
        "WHERE pipe = ? AND retired = 0", (pipe,),
    )
