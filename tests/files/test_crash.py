"""Crash safety of the files source: ``sluice run`` SIGKILLed during a download and between a
file's commit and its post-action, against the asyncssh SFTP server (in a thread of the test
process, so it keeps serving while the test waits on the subprocess). After a restart the dataset
equals the files' records, no version is duplicated, each file was moved exactly once, and the
partial downloads the killed runs left in local staging (``SLUICE_TMPDIR``) are removed. On
SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import orjson
import pytest
import yaml

from tests.core.test_crash import committed, pg_committed, run_to_end, snapshot, start
from tests.files.common import csv_rows, two_step
from tests.files.conftest import SftpBackend
from tests.servers.storage import SftpServer

FILES, ROWS = 12, 400


@pytest.fixture
def server(threaded_sftp: SftpServer) -> SftpServer:
    return threaded_sftp


def setup(tmp_path: Path, server: SftpServer) -> tuple[Path, Path, set[str]]:
    backend = SftpBackend(server)
    ids = set()
    for f in range(FILES):
        rows = [f"{f}-{i}" for i in range(ROWS)]
        backend.put(f"f{f:02}.csv", csv_rows(rows).encode())
        ids.update(rows)
    pipes = two_step(backend.system(), files={"after_ingest": {"move_to": "archive"}, "concurrency": 2})
    pipes[2]["batch_size"] = 50  # a file commits in 8 batches: a kill lands inside one
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg, tmp_path / "data", ids


async def ingested(data: Path, store_url: str | None) -> int:
    """Versions committed to dataset ``ingest`` so far (0: none, or no store yet)."""
    if store_url is None:
        return committed(data / "sluice.db", "ingest") + 1
    conn = await asyncpg.connect(store_url)
    try:
        return await pg_committed(conn, "ingest") + 1
    finally:
        await conn.close()


async def partly_read(data: Path, store_url: str | None) -> bool:
    """Whether a file's unit is running with some, not all, of its records committed (its
    checkpoint ``{"fingerprint", "records": n}``, 0 < n < ROWS)."""
    sql = "SELECT checkpoint FROM work_units WHERE pipe = 'ingest' AND status = 'running'"
    if store_url is None:
        db = data / "sluice.db"
        if not db.exists():
            return False
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                rows = [r[0] for r in conn.execute(sql).fetchall()]
            finally:
                conn.close()
        except sqlite3.Error:
            return False  # schema not created yet
    else:
        pg = await asyncpg.connect(store_url)
        try:
            rows = [r[0] for r in await pg.fetch(sql)]
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await pg.close()
    return any(0 < int((orjson.loads(cp) if cp else {}).get("records") or 0) < ROWS for cp in rows)


async def kill_when(cfg: Path, data: Path, store_url: str | None, reached: Callable[[], Awaitable[bool]]) -> None:
    """Start ``sluice run`` and SIGKILL it once ``await reached()``."""
    proc = start(cfg, data, store_url)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if await reached():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return
            assert time.monotonic() - t0 < 60, "the run neither reached the kill point nor ended"
            await anyio.sleep(0.003)
        raise AssertionError("the run ended before the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def check_end_state(data: Path, server: SftpServer, ids: set[str], store_url: str | None) -> None:
    got = await snapshot(data, store_url)
    ingest = got["ingest"]
    assert {k for k, (_, deleted) in ingest["latest"].items() if not deleted} == ids  # type: ignore[union-attr]
    assert ingest["duplicates"] == 0
    assert set(ingest["versions"].values()) == {1}  # type: ignore[union-attr]  # every row written once
    moved = {f"f{f:02}.csv" for f in range(FILES)}
    assert dict(server.counters.renames) == dict.fromkeys(moved, 1)
    assert {p.name for p in (server.root / "archive").iterdir()} == moved
    assert not list(server.root.glob("*.csv"))


async def test_sigkill_during_a_download_then_restart(tmp_path: Path, server: SftpServer, store_url: str | None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, data, ids = setup(tmp_path, server)
    local = tmp_path / "staging"
    local.mkdir()
    monkeypatch.setenv("SLUICE_TMPDIR", str(local))  # inherited by `sluice run`

    async def share(fraction: float) -> bool:
        return await ingested(data, store_url) >= FILES * ROWS * fraction

    # first kill: mid-way through the files, once a third is committed and a file is committed in
    # part (it resumes after its last committed batch)
    async def midway() -> bool:
        return await share(0.3) and await partly_read(data, store_url)

    await kill_when(cfg, data, store_url, midway)
    first = await ingested(data, store_url)
    assert FILES * ROWS * 0.3 <= first < FILES * ROWS
    # second kill: while a file is being downloaded (the server holds its reads)
    server.counters.read_delay_s = 5
    reads = sum(server.counters.reads.values())

    async def reading() -> bool:  # a file opened (counted at open), its local copy made, its read held
        return sum(server.counters.reads.values()) > reads and bool(list(local.glob("sluice-staging-*/*.download")))

    await kill_when(cfg, data, store_url, reading)
    assert await ingested(data, store_url) < FILES * ROWS
    assert list(local.glob("sluice-staging-*/*.download"))  # the held download, left behind by the kill
    server.counters.read_delay_s = 0
    run_to_end(cfg, data, store_url)
    await check_end_state(data, server, ids, store_url)
    assert not list(local.iterdir())  # swept by the restart, which removed its own at exit


async def test_sigkill_between_commit_and_post_action_then_restart(tmp_path: Path, server: SftpServer,
                                                                   store_url: str | None) -> None:
    cfg, data, ids = setup(tmp_path, server)
    server.counters.rename_delay_s = 5  # the first move is asked for after its file's commit, then held

    async def moving() -> bool:
        return sum(server.counters.rename_requests.values()) > 0

    await kill_when(cfg, data, store_url, moving)
    held = next(iter(server.counters.rename_requests))
    assert not server.counters.renames and (server.root / held).exists()
    done = await ingested(data, store_url)
    assert done >= ROWS  # the held file's rows were all committed before its move was asked for
    reads_of_held = server.counters.reads[held]
    server.counters.rename_delay_s = 0
    run_to_end(cfg, data, store_url)
    assert server.counters.reads[held] == reads_of_held  # the restart moved it without reading it again
    await check_end_state(data, server, ids, store_url)
