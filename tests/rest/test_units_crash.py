"""Crash safety of the ``rest`` source over work units: ``sluice run`` (a subprocess) SIGKILLed in
the middle of a 2-step ingestion from the survey API (127.0.0.1, in this process, 50 ms per
request so the run takes a few seconds), then run again: killed early (one unit done), late (12
done) or twice (the restart killed again; also on the PostgreSQL store). Each kill is sent once
the ledger, polled read-only from the SQLite file or the PostgreSQL tables, shows that many units
done and a unit stopped between two pages; the unit checkpoints read from the store after each
kill say which pages were committed, and the server's request log must show none of those asked
for again (a page in flight at the kill, not committed, is asked once more)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from runtime.store import make_store
from runtime.store.protocol import StateStore, WorkUnit
from tests.conftest import new_postgres_url
from tests.rest.survey_units import PAGE_SIZE, WEEKS, asked, server_responses, survey_config, unwrapped
from tests.servers.survey_api import SurveyApi, serve

SLUICE = str(Path(sys.executable).parent / "sluice")


def start(cfg: Path, data: Path, store_url: str | None) -> subprocess.Popen[bytes]:
    store = ["--store", store_url] if store_url else []
    return subprocess.Popen([SLUICE, "run", str(cfg), "--data-dir", str(data), *store], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


async def ledger(data: Path, pg: asyncpg.Connection | None) -> dict[str, tuple[str, dict | None]]:
    """key -> (status, checkpoint) of pipe ``responses``'s units, read-only (empty before the
    ledger exists): from the SQLite file, or the PostgreSQL store through ``pg``."""
    if pg is not None:
        try:
            found = await pg.fetch("SELECT key, status, checkpoint FROM work_units WHERE pipe = 'responses'")
        except asyncpg.UndefinedTableError:
            return {}
        return {k.decode(): (s, orjson.loads(c) if c else None) for k, s, c in found}
    db = data / "sluice.db"
    if not db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = conn.execute("SELECT key, status, checkpoint FROM work_units WHERE pipe = 'responses'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {k: (s, orjson.loads(c) if c else None) for k, s, c in rows}


def mid_unit(units: dict[str, tuple[str, dict | None]], done: int) -> bool:
    """At least ``done`` units done and one stopped between two of its pages."""
    finished = sum(s == "done" for s, _ in units.values())
    between = any(s == "running" and c is not None and c["next"] is not None for s, c in units.values())
    return finished >= done and between


def committed_pages(status: str, checkpoint: dict | None, pages: int) -> set[int]:
    """The pages of a unit committed before the kill, from its ledger row."""
    if status == "done":
        return set(range(1, pages + 1))
    if checkpoint is None:
        return set()
    if checkpoint["next"] is None:
        return set(range(1, pages + 1))
    return set(range(1, int(checkpoint["next"]["params"]["page"])))


async def units_after_kill(cfg: Path, data: Path, done: int, store_url: str | None) -> dict[str, WorkUnit]:
    """Start ``sluice run``, SIGKILL it once :func:`mid_unit`, and return the ledger it left,
    checked to be mid-run (units done, not all, one between two pages)."""
    proc = start(cfg, data, store_url)
    pg = await asyncpg.connect(store_url) if store_url else None
    try:
        with anyio.fail_after(120):
            while not mid_unit(await ledger(data, pg), done):
                assert proc.poll() is None, "sluice run ended before the kill point"
                await anyio.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if pg is not None:
            await pg.close()
    assert proc.returncode == -signal.SIGKILL
    units = {u.key: u for u in await read_store(data, store_url, lambda store: store.work_units("responses"))}
    statuses = Counter(u.status for u in units.values())
    assert done <= statuses["done"] < 30 and len(units) == 30, statuses
    assert any(u.checkpoint is not None and u.checkpoint["next"] is not None for u in units.values())
    return units


async def read_store(data: Path, store_url: str | None, read: Callable[[StateStore], Awaitable[Any]]) -> Any:
    store = make_store(store_url, data)
    await store.open()
    try:
        return await read(store)
    finally:
        await store.close()


def pages_of(api: SurveyApi, unit: WorkUnit) -> int:
    survey, start_at = unit.key.split("|")
    end_at = unit.variables["window_end"]
    count = len(api.window(survey, datetime.fromisoformat(start_at), datetime.fromisoformat(end_at)))
    return max(1, -(-count // PAGE_SIZE))


@pytest.mark.parametrize(("kills", "backend"), [([1], "sqlite"), ([12], "sqlite"), ([3, 18], "sqlite"),
                                               ([3, 18], "postgresql")],
                         ids=["early", "late", "twice", "twice-postgresql"])
async def test_sigkill_mid_ingestion_then_restart_ends_with_the_server_data_and_no_page_asked_twice(
        write_config, tmp_path, request, kills: list[int], backend: str) -> None:
    store_url = await new_postgres_url(request) if backend == "postgresql" else None
    api = SurveyApi()  # 5 surveys x 6 weeks = 30 units of about 3 pages
    api.latency = 0.05
    async with serve(api):
        cfg = write_config(survey_config(api.url, {"windows": WEEKS}, compaction={"keep_versions": None},
                                         batch_size=PAGE_SIZE))  # a batch per page: pages commit one by one
        data = tmp_path / "data"
        left, marks = [], []
        for done in kills:  # each run after the first is a restart, killed again until the last
            left.append(await units_after_kill(cfg, data, done, store_url))
            marks.append(len(api.requests))
        restarted = start(cfg, data, store_url)
        with anyio.fail_after(120):
            while restarted.poll() is None:
                await anyio.sleep(0.05)
        assert restarted.returncode == 0

        after = {u.key: u for u in await read_store(data, store_url, lambda store: store.work_units("responses"))}
        latest, _ = await read_store(data, store_url, lambda store: store.read("responses", since=None, limit=100_000))
        history, _ = await read_store(
            data, store_url, lambda store: store.read("responses", since=None, limit=100_000, history=True))
        assert {u.status for u in after.values()} == {"done"}
        assert {e["_id"]: unwrapped(e) for e in latest} == server_responses(api)
        assert set(Counter(e["_id"] for e in history).values()) == {1}  # no version written twice

        for n, (units, mark) in enumerate(zip(left, marks, strict=True)):
            until = marks[n + 1] if n + 1 < len(marks) else None  # the requests of the run after kill n
            again = Counter((f"{a.survey}|{a.start}", a.page) for a in asked(api, mark, until))
            assert set(again.values()) <= {1}  # no page asked twice by one run
            for key, unit in units.items():
                pages = pages_of(api, unit)
                rest = set(range(1, pages + 1)) - committed_pages(unit.status, unit.checkpoint, pages)
                asked_again = {page for (k, page) in again if k == key}
                assert asked_again <= rest, (n, key)  # no page committed before the kill asked again
                if until is None:
                    assert asked_again == rest, key  # the last run asked for the rest of every unit
