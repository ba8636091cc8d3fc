"""The cluster tables of the PostgreSQL store and their statements: members with heartbeats,
leases with epochs (pipe runs, the leader), and per-unit claims fenced by epoch.

A lease row ``(name, owner, holder, epoch, expiry_us)`` is taken when it is free or expired (its
expiry is checked by the claim itself: no reaper), which increments its epoch; it is renewed by its
owner's heartbeat and released by setting its expiry to 0 (the epoch stays, so it only grows). A
work unit claimed in cluster mode gets ``lease_owner`` = the member and ``lease_epoch`` + 1. A
commit of leased work first reads its lease rows ``FOR SHARE`` with owner and epoch in the same
transaction: a missing row means the lease was lost, and the transaction is rolled back (a
takeover waits for that share lock, so it never overlaps a commit).

Every function takes a connection; the caller owns the transaction. Times are microseconds since
the epoch (:func:`~runtime.store.postgres.datasets.now_us`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from runtime.store.postgres.datasets import now_us
from runtime.store.postgres.units import _FIELDS, _unit, changed_rows
from runtime.store.protocol import WorkUnit


def lock_key(pipe: str) -> int:
    """The advisory-lock key of a pipe: 64 bits of its name's BLAKE2b hash, the same in every process."""
    return int.from_bytes(hashlib.blake2b(pipe.encode(), digest_size=8).digest(), "big", signed=True)


SCHEMA = """
CREATE TABLE cluster_members(
    member text COLLATE "C" PRIMARY KEY, host text NOT NULL, pid integer NOT NULL, port integer,
    started_us bigint NOT NULL, heartbeat_us bigint NOT NULL);
CREATE TABLE leases(
    name text COLLATE "C" PRIMARY KEY, owner text NOT NULL, holder text NOT NULL,
    epoch bigint NOT NULL, expiry_us bigint NOT NULL);
ALTER TABLE work_units ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
"""

CHANNEL = "sluice_changes"
"""The LISTEN/NOTIFY channel: payload ``dataset:<name>`` or ``units:<pipe>``."""

FORGET_AFTER_S = 3600.0
"""A member whose last heartbeat is older than this (seconds) is removed from ``cluster_members``."""


@dataclass
class Membership:
    """What one cluster member (one ``sluice serve``) holds, kept in its process.

    Attributes:
        member: the member id (``host:pid:random``), the ``owner`` of its leases and units.
        host, pid, port, started_us: shown by ``GET /api/cluster``.
        lease_s: lifetime of its leases (seconds); heartbeats renew them every third of it.
        shared: pipes with work units: their runs are shared (every member claims units).
        limits: such a pipe -> its ``max_concurrent_units``, held across the cluster.
        leases: lease name (``pipe:<id>``, ``leader``) -> the epoch it holds.
        units: pipe -> unit key -> the epoch of the claim this member holds.
        helping: shared pipes whose run this member joined or resumed (it neither plans nor
            prepares their units).
        leader: whether it holds the ``leader`` lease.
    """

    member: str
    host: str
    pid: int
    started_us: int
    lease_s: float
    port: int | None = None
    shared: set[str] = field(default_factory=set)
    limits: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    units: dict[str, dict[str, int]] = field(default_factory=dict)
    helping: set[str] = field(default_factory=set)
    leader: bool = False


@dataclass(frozen=True)
class Taken:
    """A lease just taken: its epoch, and whether its previous holder left it without releasing
    it (it died or froze: its run is to be resumed, not restarted)."""

    epoch: int
    resumed: bool


async def listen(dsn: str, on_change: Callable[[str, str], None]) -> asyncpg.Connection:
    """A dedicated connection listening on :data:`CHANNEL`: ``on_change(kind, name)`` for each
    :func:`notify` of any store on the database (close the connection to stop)."""
    conn = await asyncpg.connect(dsn)

    def received(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, name = payload.partition(":")
        on_change(kind, name)

    await conn.add_listener(CHANNEL, received)
    return conn


async def notify(conn: asyncpg.Connection, kind: str, name: str) -> None:
    """Announce a change to every listener when the caller's transaction commits (NOTIFY is
    transactional: a rolled-back change is never announced; repeats in one transaction are
    delivered once)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{kind}:{name}")


async def heartbeat(conn: asyncpg.Connection, member: str, host: str, pid: int, port: int | None,
                    started_us: int) -> None:
    """Register ``member`` or record its heartbeat now; forget long-dead members."""
    now = now_us()
    await conn.execute(
        "INSERT INTO cluster_members(member, host, pid, port, started_us, heartbeat_us) VALUES ($1, $2, $3, $4, $5, "
        "$6) ON CONFLICT (member) DO UPDATE SET heartbeat_us = excluded.heartbeat_us, port = excluded.port",
        member, host, pid, port, started_us, now)
    await conn.execute("DELETE FROM cluster_members WHERE heartbeat_us < $1", now - int(FORGET_AFTER_S * 1e6))


async def leave(conn: asyncpg.Connection, member: str) -> None:
    """A clean stop: the member's leases and running units are released, its row removed."""
    await conn.execute("UPDATE leases SET expiry_us = 0 WHERE owner = $1", member)
    await conn.execute("UPDATE work_units SET status = 'pending', lease_owner = NULL, lease_expiry_us = NULL "
                       "WHERE lease_owner = $1 AND status = 'running'", member)
    await conn.execute("DELETE FROM cluster_members WHERE member = $1", member)


async def take(conn: asyncpg.Connection, name: str, member: str, holder: str, lease_s: float) -> Taken | None:
    """Take lease ``name`` if it is free, released or expired; None when another member holds it."""
    now = now_us()
    old = await conn.fetchrow("SELECT owner, expiry_us FROM leases WHERE name = $1 FOR UPDATE", name)
    if old is not None and old[1] >= now:
        return None
    epoch = await conn.fetchval(
        "INSERT INTO leases AS l(name, owner, holder, epoch, expiry_us) VALUES ($1, $2, $3, 1, $4) "
        "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, holder = excluded.holder, epoch = l.epoch + 1, "
        "expiry_us = excluded.expiry_us RETURNING epoch", name, member, holder, now + int(lease_s * 1e6))
    return Taken(int(epoch), old is not None and old[1] > 0)


async def holder_of(conn: asyncpg.Connection, name: str) -> str | None:
    """Who holds lease ``name`` now (its holder text and member), None when nobody does."""
    row = await conn.fetchrow("SELECT holder, owner FROM leases WHERE name = $1 AND expiry_us >= $2", name, now_us())
    return None if row is None else f"{row[0]} on member {row[1]}"


async def release(conn: asyncpg.Connection, name: str, member: str, epoch: int) -> None:
    """Release lease ``name`` if ``member`` still holds it at ``epoch``."""
    await conn.execute("UPDATE leases SET expiry_us = 0 WHERE name = $1 AND owner = $2 AND epoch = $3",
                       name, member, epoch)


async def renew(conn: asyncpg.Connection, member: str, leases: dict[str, int],
                units: dict[str, dict[str, int]], lease_s: float) -> tuple[list[str], list[tuple[str, str]]]:
    """Move the expiry of every lease and unit ``member`` still holds (same owner and epoch) to
    ``lease_s`` from now; returns the leases and ``(pipe, key)`` units that were lost."""
    expiry = now_us() + int(lease_s * 1e6)
    lost: list[str] = []
    if leases:
        kept = await conn.fetch(
            "UPDATE leases l SET expiry_us = $2 FROM unnest($3::text[], $4::bigint[]) j(name, epoch) "
            "WHERE l.name = j.name AND l.epoch = j.epoch AND l.owner = $1 RETURNING l.name",
            member, expiry, list(leases), list(leases.values()))
        lost = sorted(set(leases) - {r[0] for r in kept})
    lost_units: list[tuple[str, str]] = []
    for pipe, held in units.items():
        if not held:
            continue
        kept = await conn.fetch(
            "UPDATE work_units w SET lease_expiry_us = $3 FROM unnest($4::bytea[], $5::bigint[]) j(key, epoch) "
            "WHERE w.pipe = $1 AND w.key = j.key AND w.lease_epoch = j.epoch AND w.lease_owner = $2 "
            "AND w.status = 'running' RETURNING w.key",
            pipe, member, expiry, [k.encode() for k in held], list(held.values()))
        lost_units += [(pipe, k) for k in sorted(set(held) - {r[0].decode() for r in kept})]
    return lost, lost_units


async def hold_lease(conn: asyncpg.Connection, name: str, member: str, epoch: int) -> bool:
    """Inside a commit: whether ``member`` still holds lease ``name`` at ``epoch`` (the row is
    then share-locked until the commit, so no takeover overlaps it)."""
    row = await conn.fetchval("SELECT 1 FROM leases WHERE name = $1 AND owner = $2 AND epoch = $3 FOR SHARE",
                              name, member, epoch)
    return row is not None


async def hold_units(conn: asyncpg.Connection, pipe: str, member: str, held: dict[str, int]) -> list[str]:
    """Inside a commit: share-lock the units ``member`` holds (key -> epoch); returns the keys it
    lost (another member reclaimed them, or they are no longer running). The rows are locked by
    key and compared after the lock is granted (the latest version), not filtered by the lock."""
    rows = await conn.fetch("SELECT key, lease_owner, lease_epoch, status FROM work_units WHERE pipe = $1 "
                            "AND key = ANY($2::bytea[]) FOR SHARE", pipe, [k.encode() for k in held])
    kept = {r[0].decode() for r in rows if r[1] == member and r[3] == "running" and held.get(r[0].decode()) == r[2]}
    return sorted(set(held) - kept)


async def unit_holders(conn: asyncpg.Connection, pipe: str, keys: list[str]) -> dict[str, str]:
    """For an error message: who holds each of ``keys`` now (``status, owner, epoch``)."""
    rows = await conn.fetch("SELECT key, status, lease_owner, lease_epoch FROM work_units WHERE pipe = $1 "
                            "AND key = ANY($2::bytea[])", pipe, [k.encode() for k in keys])
    return {r[0].decode(): f"{r[1]}, owner {r[2]}, epoch {r[3]}" for r in rows}


async def claim(conn: asyncpg.Connection, pipe: str, member: str, limit: int, lease_s: float,
                cap: int | None) -> list[tuple[WorkUnit, int]]:
    """Claim up to ``limit`` units, with their new epochs: first running ones whose lease expired
    (a dead or frozen member's, taken over before anything else), then pending ones, then due
    failed or waiting ones, each group by key; rows another claim holds are skipped. With ``cap``
    (the pipe's concurrency limit) claims of one pipe are serialised by a transaction advisory
    lock, at most ``cap`` units run at once across the cluster, and one member holds at most its
    share of them
    (``ceil(cap / live members)``), so the units spread over every member."""
    now = now_us()
    if cap is not None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('sluice-units:' || $1, 0))", pipe)
        mine, running = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE lease_owner = $2), count(*) FROM work_units WHERE pipe = $1 "
            "AND status = 'running' AND lease_expiry_us >= $3 AND NOT retired", pipe, member, now)
        live = await conn.fetchval("SELECT count(*) FROM cluster_members WHERE heartbeat_us >= $1",
                                   now - int(lease_s * 1e6))
        share = math.ceil(cap / max(int(live), 1))
        limit = min(limit, cap - int(running), share - int(mine))
        if limit <= 0:
            return []
    fields = ", ".join("w." + f for f in _FIELDS.split(", "))
    rows = await conn.fetch(
        "WITH c AS (SELECT key FROM work_units WHERE pipe = $1 AND NOT retired AND (status = 'pending' "
        "OR (status IN ('failed', 'waiting') AND coalesce(due_us, 0) <= $2) "
        "OR (status = 'running' AND lease_expiry_us < $2)) "
        "ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, key LIMIT $3 "
        "FOR UPDATE SKIP LOCKED) "
        "UPDATE work_units w SET status = 'running', lease_owner = $4, lease_expiry_us = $5, "
        "lease_epoch = w.lease_epoch + 1 FROM c "
        f"WHERE w.pipe = $1 AND w.key = c.key RETURNING {fields}, w.lease_epoch",
        pipe, now, limit, member, now + int(lease_s * 1e6),
    )
    return sorted(((_unit(r), int(r[-1])) for r in rows), key=lambda u: u[0].key.encode())


async def release_units(conn: asyncpg.Connection, pipe: str, member: str, held: dict[str, int]) -> int:
    """Put the units ``member`` still holds back to ``pending`` (at the end of its share of a run:
    a stopped unit resumes from its checkpoint on whichever member claims it next)."""
    status = await conn.execute(
        "UPDATE work_units w SET status = 'pending', lease_owner = NULL, lease_expiry_us = NULL "
        "FROM unnest($3::bytea[], $4::bigint[]) j(key, epoch) WHERE w.pipe = $1 AND w.key = j.key "
        "AND w.lease_epoch = j.epoch AND w.lease_owner = $2 AND w.status = 'running'",
        pipe, member, [k.encode() for k in held], list(held.values()))
    return changed_rows(status)


async def joinable(conn: asyncpg.Connection, pipes: list[str], member: str) -> list[str]:
    """Of ``pipes`` (pipes with work units), those with units to take over (running, their lease
    expired: a member died or froze), or with pending units of a run another member started and
    did not release (alive, or dead with its lease expired)."""
    rows = await conn.fetch(
        "SELECT p FROM unnest($1::text[]) p WHERE EXISTS (SELECT 1 FROM work_units WHERE pipe = p AND NOT retired "
        "AND status = 'running' AND lease_expiry_us < $3) OR (EXISTS (SELECT 1 FROM leases WHERE name = 'pipe:' || p "
        "AND owner <> $2 AND expiry_us > 0) AND EXISTS (SELECT 1 FROM work_units WHERE pipe = p AND NOT retired "
        "AND status = 'pending'))",
        pipes, member, now_us())
    return [r[0] for r in rows]


async def overview(conn: asyncpg.Connection, lease_s: float) -> dict[str, Any]:
    """What ``GET /api/cluster`` shows: members (``alive`` when their heartbeat is younger than
    ``lease_s``), the leases held now, and how many running units each member holds per pipe."""
    now = now_us()
    members = await conn.fetch("SELECT member, host, pid, port, started_us, heartbeat_us FROM cluster_members "
                               "ORDER BY started_us, member")
    leases = await conn.fetch("SELECT name, owner, holder, epoch, expiry_us FROM leases WHERE expiry_us >= $1 "
                              "ORDER BY name", now)
    units = await conn.fetch("SELECT lease_owner, pipe, count(*) FROM work_units WHERE status = 'running' "
                             "AND lease_owner IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2")
    held: dict[str, dict[str, Any]] = {}
    for name, owner, holder, epoch, expiry in leases:
        held.setdefault(owner, {"leases": [], "units": {}})["leases"].append(
            {"name": name, "holder": holder, "epoch": epoch, "expires_in_s": round((expiry - now) / 1e6, 3)})
    for owner, pipe, count in units:
        held.setdefault(owner, {"leases": [], "units": {}})["units"][pipe] = count
    return {"members": [
        {"member": m, "host": h, "pid": pid, "port": port, "started_us": started, "heartbeat_us": beat,
         "heartbeat_age_s": round((now - beat) / 1e6, 3), "alive": now - beat <= int(lease_s * 1e6),
         **held.get(m, {"leases": [], "units": {}})}
        for m, h, pid, port, started, beat in members]}
