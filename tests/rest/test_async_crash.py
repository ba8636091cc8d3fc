"""Crash safety of asynchronous ingestion: ``sluice run`` (a subprocess) SIGKILLed after the job
was created, during polling and between result chunks, against our bulk-job API on 127.0.0.1.
After each restart the dataset equals the server's rows with one version per id, the server saw
one job created, and no chunk committed before the kill was asked for again. On SQLite and
PostgreSQL (``store_url``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from runtime import Runtime
from tests.rest.async_jobs import job_config
from tests.rest.conftest import ids
from tests.servers.bulk_api import BulkApi, serve

SLUICE = str(Path(sys.executable).parent / "sluice")
DELAY_S = 8.0  # a hung request; the server's shutdown waits for it, so not longer
CHUNKS = [None, "MTAwMA", "MjAwMA"]  # the bulk API's locators of rows 0, 1000 and 2000


def delayed(api: BulkApi, **match: str) -> None:
    """The next request matching ``match`` hangs (the kill lands while it is in flight)."""
    api.faults.append({"delay": DELAY_S, "method": "GET", **match})


async def ledger(data: Path, store_url: str | None) -> dict[str, Any]:
    """The unit's checkpoint as committed now (a read-only look at the killed run's store)."""
    sql = "SELECT checkpoint FROM work_units WHERE pipe = 'accounts'"
    if store_url is not None:
        conn = await asyncpg.connect(store_url)
        try:
            raw = await conn.fetchval(sql)
        finally:
            await conn.close()
        return orjson.loads(raw) if raw else {}
    try:
        with closing(sqlite3.connect(f"file:{data / 'sluice.db'}?mode=ro", uri=True)) as db:
            row = db.execute(sql).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return {}
    return orjson.loads(row[0]) if row and row[0] else {}


async def kill_when(api: BulkApi, proc: subprocess.Popen[bytes], ready: Callable[[], Awaitable[bool]]) -> None:
    """SIGKILL ``proc`` once ``ready()`` holds and the queued delay is in flight."""
    with anyio.fail_after(60):
        while not (await ready() and not api.faults):
            assert proc.poll() is None, "sluice run ended before it was killed"
            await anyio.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


async def ready(point: str, api: BulkApi, data: Path, store_url: str | None) -> bool:
    """Whether the run got to the kill point (the delayed request is in flight besides)."""
    if point == "between-chunks":
        return (await ledger(data, store_url)).get("locator") == CHUNKS[2]  # chunk 2 committed, chunk 3 asked for
    return bool(api.created) and (point == "after-create" or api.created[0].polls >= 2)


@pytest.mark.parametrize("point", ["after-create", "polling", "between-chunks"])
async def test_a_killed_run_re_attaches_its_job_and_resumes_at_the_next_chunk(point, write_config, tmp_path,
                                                                              store_url):
    api = BulkApi(rows=2500, chunk=1000)
    api.ready_after_polls = 5 if point == "polling" else 2
    async with serve(api):
        cfg = write_config(job_config(api.url, poll_interval_s=0.02))
        data = tmp_path / "data"
        if point == "after-create":
            delayed(api, path="/jobs/750")  # the first poll
        elif point == "between-chunks":
            delayed(api, path="/jobs/750", query=f"locator={CHUNKS[2]}")
        store = ["--store", store_url] if store_url else []
        proc = subprocess.Popen([SLUICE, "run", str(cfg), "--data-dir", str(data), *store], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        try:
            if point == "polling":
                with anyio.fail_after(60):
                    while not (api.created and api.created[0].polls >= 2):
                        await anyio.sleep(0.005)
                delayed(api, path="/jobs/750")  # the next poll hangs
            await kill_when(api, proc, lambda: ready(point, api, data, store_url))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        api.faults.clear()
        async with Runtime(cfg, data_dir=data, store=store_url) as rt:
            [unit] = await rt.store.work_units("accounts")
            assert unit.checkpoint["job"] == api.created[0].id  # committed before the kill
            committed = CHUNKS.index(unit.checkpoint.get("locator")) if unit.checkpoint.get("ready") else 0
            if point == "between-chunks":
                assert committed >= 1, "no chunk was committed before the kill"
            result = await rt.run_pipe("accounts")
            assert result.ok and result.units["done"] == 1, result.error
            entities = await ids(rt, "accounts")
            versions, _ = await rt.store.read("accounts", since=None, limit=10_000, history=True)
        assert {k: {f: v for f, v in e.items() if not f.startswith("_")} for k, e in entities.items()} == {
            row["Id"]: row for row in api.truth()}
        assert len(versions) == len(entities) == 2500  # no entity version written twice
        assert len(api.created) == 1  # re-attached by its id, never created again
        job = api.created[0].id
        assert all(api.locator_requests[(job, loc)] == 1 for loc in CHUNKS[:committed])  # committed: asked once
        assert all(api.locator_requests[(job, loc)] >= 1 for loc in CHUNKS)
        assert api.jobs == {}  # cleaned up
