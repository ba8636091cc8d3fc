"""Crash safety of the files source: ``sluice run`` SIGKILLed during a download and between a
file's commit and its post-action, against the asyncssh SFTP server (in a thread of the test
process, so it keeps serving while the test waits on the subprocess). After a restart the dataset
equals the files' records, no version is duplicated, and each file was moved exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.core.test_crash import committed, run_to_end, snapshot, start
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


def kill_when(cfg: Path, data: Path, reached: Callable[[], bool]) -> None:
    """Start ``sluice run`` and SIGKILL it once ``reached()``."""
    proc = start(cfg, data)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if reached():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return
            assert time.monotonic() - t0 < 60, "the run neither reached the kill point nor ended"
            time.sleep(0.003)
        raise AssertionError("the run ended before the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def check_end_state(data: Path, server: SftpServer, ids: set[str]) -> None:
    got = await snapshot(data)
    ingest = got["ingest"]
    assert {k for k, (_, deleted) in ingest["latest"].items() if not deleted} == ids  # type: ignore[union-attr]
    assert ingest["duplicates"] == 0
    assert set(ingest["versions"].values()) == {1}  # type: ignore[union-attr]  # every row written once
    moved = {f"f{f:02}.csv" for f in range(FILES)}
    assert dict(server.counters.renames) == dict.fromkeys(moved, 1)
    assert {p.name for p in (server.root / "archive").iterdir()} == moved
    assert not list(server.root.glob("*.csv"))


async def test_sigkill_during_a_download_then_restart(tmp_path: Path, server: SftpServer) -> None:
    cfg, data, ids = setup(tmp_path, server)
    db = data / "sluice.db"
    # first kill: mid-way through the files, some committed in part (a file resumes after its
    # last committed batch)
    kill_when(cfg, data, lambda: committed(db, "ingest") + 1 >= FILES * ROWS * 0.3)
    first = committed(db, "ingest") + 1
    assert FILES * ROWS * 0.3 <= first < FILES * ROWS
    # second kill: while a file is being downloaded (the server holds its reads)
    server.counters.read_delay_s = 5
    reads = sum(server.counters.reads.values())
    kill_when(cfg, data, lambda: sum(server.counters.reads.values()) > reads)
    assert committed(db, "ingest") + 1 < FILES * ROWS
    server.counters.read_delay_s = 0
    run_to_end(cfg, data)
    await check_end_state(data, server, ids)


async def test_sigkill_between_commit_and_post_action_then_restart(tmp_path: Path, server: SftpServer) -> None:
    cfg, data, ids = setup(tmp_path, server)
    db = data / "sluice.db"
    server.counters.rename_delay_s = 5  # the first move is asked for after its file's commit, then held
    kill_when(cfg, data, lambda: sum(server.counters.rename_requests.values()) > 0)
    held = next(iter(server.counters.rename_requests))
    assert not server.counters.renames and (server.root / held).exists()
    done = committed(db, "ingest") + 1
    assert done >= ROWS  # the held file's rows were all committed before its move was asked for
    reads_of_held = server.counters.reads[held]
    server.counters.rename_delay_s = 0
    run_to_end(cfg, data)
    assert server.counters.reads[held] == reads_of_held  # the restart moved it without reading it again
    await check_end_state(data, server, ids)
