"""Fixtures shared by every test: a temporary store (SQLite and PostgreSQL) and config directories.

Tests taking ``store`` (an open store) or ``store_url`` (a URL for :class:`Runtime` or ``--store``,
None for the default SQLite file) run once per backend, so a semantic difference between the
SQLite and the PostgreSQL store fails a test. One PostgreSQL server serves the whole session
(started on first use); each test gets a fresh database copied from a template that already holds
the schema.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from runtime.store import PostgresStore, SqliteStore, StateStore
from tests.servers.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", "postgresql"]
_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One temporary PostgreSQL server for the session."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database holding the store's schema, copied for each test (``CREATE DATABASE ... TEMPLATE``)."""

    async def build() -> None:
        store = PostgresStore(await postgres_server.create_database("sluice_template"))
        await store.open()
        await store.close()

    with ThreadPoolExecutor(1) as pool:  # first requested from inside an async fixture: its loop runs
        pool.submit(asyncio.run, build()).result()
    return "sluice_template"


async def new_postgres_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database with the store's schema."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    return await server.create_database(f"t{next(_databases)}", template=template)


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest) -> str | None:
    """None (the default SQLite store in the data directory) or a fresh PostgreSQL database's URL."""
    return None if request.param == "sqlite" else await new_postgres_url(request)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """An open store: SQLite in a temporary directory, or PostgreSQL in a fresh database."""
    s: StateStore = (SqliteStore(tmp_path / "state.db") if request.param == "sqlite"
                     else PostgresStore(await new_postgres_url(request)))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def write_config(tmp_path: Path):
    """Write config objects to ``tmp_path/config/<name>.yaml``; returns the config directory."""
    root = tmp_path / "config"
    root.mkdir(exist_ok=True)

    def write(objects: list[dict] | dict, name: str = "pipes") -> Path:
        (root / f"{name}.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))
        return root

    return write
