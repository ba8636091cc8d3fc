"""Cluster fixtures: a fresh PostgreSQL database, the unit test API (:mod:`tests.servers.unit_api`)
and real ``sluice serve`` processes sharing one config directory and that database, with short
leases (``SLUICE_CLUSTER_LEASE_S``) so takeovers happen in about a second.

``cluster.start(n)`` starts n members; :meth:`Cluster.units` reads the ledger, :meth:`Cluster.versions`
how many versions of each entity the output dataset holds (exactly once: one each)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest
import yaml

from tests.conftest import new_postgres_url
from tests.daemon.conftest import ADMIN, Api, Served
from tests.servers.faults import serve
from tests.servers.unit_api import UnitApi

LEASE_S = 1.5


def unit_pipe(url: str, keys: list[str], *, concurrency: int, pipe: str = "items") -> list[dict[str, Any]]:
    """The REST system and a pipe with one work unit per key (``GET /items/{key}``), run on request."""
    system = {"_id": "api", "type": "system:rest", "base_url": url,
              "retry_strategy": {"default": {"retry": False},
                                 "connection": {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05}}}
    source = {"type": "rest", "system": "api", "url": "/items/{{ unit.value }}", "payload_property": "data",
              "id_expression": "{{ id }}",
              "work_units": {"values": keys, "max_concurrent_units": concurrency, "retry_backoff_s": 0.1}}
    return [system, {"_id": pipe, "type": "pipe", "source": source, "pump": {"mode": "manual"}}]


class Cluster:
    """Members sharing ``config_dir`` and the database at ``url``; the API they read is ``api``."""

    def __init__(self, root: Path, url: str, api: UnitApi, session: aiohttp.ClientSession) -> None:
        self.root, self.url, self.api, self.session = root, url, api, session
        self.config_dir = root / "config"
        self.config_dir.mkdir()
        self.members: list[Served] = []
        self._n = itertools.count()

    def configure(self, objects: list[dict[str, Any]]) -> None:
        (self.config_dir / "pipes.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))

    def start(self, n: int = 1, lease_s: float = LEASE_S) -> list[Served]:
        """Start ``n`` more members, one after the other (started at once on 2 cores, they take
        longer); returns when all of them listen."""
        started = []
        for _ in range(n):
            i = next(self._n)
            work = self.root / f"m{i}"
            work.mkdir()
            served = Served(self.config_dir, work / "data", work, {"SLUICE_CLUSTER_LEASE_S": str(lease_s)},
                            ["--store", self.url])
            self.members.append(served)
            started.append(served)
        for served in started:
            served.start()
        return started

    def api_of(self, served: Served) -> Api:
        return Api(served, self.session)

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def units(self, pipe: str = "items") -> dict[str, str]:
        """Unit key -> status."""
        rows = await self.query("SELECT key, status FROM work_units WHERE pipe = $1", pipe)
        return {r[0].decode(): r[1] for r in rows}

    async def versions(self, dataset: str = "items") -> dict[str, int]:
        """Entity id -> how many versions the dataset's log holds."""
        rows = await self.query("SELECT l.id, count(*) FROM log l JOIN datasets d ON d.ds = l.ds WHERE d.name = $1 "
                                "GROUP BY l.id", dataset)
        return {r[0].decode(): int(r[1]) for r in rows}

    async def start_run(self, served: Served, pipe: str = "items") -> None:
        await self.api_of(served).post(f"/api/pipes/{pipe}/pump", json={"operation": "start"}, token=ADMIN)

    async def stop(self) -> None:
        """Stop every member (in a thread: the test API they may be reading runs on this loop)."""
        for served in self.members:
            await anyio.to_thread.run_sync(served.stop)


@pytest.fixture
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    api = UnitApi()
    async with serve(api), aiohttp.ClientSession() as session:
        c = Cluster(tmp_path, await new_postgres_url(request), api, session)
        try:
            yield c
        finally:
            await c.stop()
