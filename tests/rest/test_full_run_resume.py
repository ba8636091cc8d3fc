"""A full run that fails or is killed before any batch changed anything is resumed as a full run,
so the deletions it owed happen (issue 8 item 1; DESIGN.md "The full-run marker is committed when a
full run starts"). Against our fault-injecting API, with a source whose since is stored at the end
of the run (comparable, not chronological): before the fix nothing of such a run was durable, so
the next run was incremental and the 8 ids removed at the server were never tombstoned. Both
tests run on SQLite and PostgreSQL (``store_url``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio

from runtime import Runtime
from tests.rest.conftest import collect_pipe, ids, system, truth
from tests.servers.faulty_api import FaultyApi, serve

SLUICE = str(Path(sys.executable).parent / "sluice")
SINCE_AT_END = {"supports_since": True, "is_chronological": False, "is_since_comparable": True,
                "updated_expression": "{{ updated }}"}


def populated_api() -> FaultyApi:
    api = FaultyApi()
    for n in range(45):
        api.upsert(f"i{n:02}", name=f"item {n}", value=n)
    return api


def runtime(config_dir: Path, tmp_path: Path, store_url: str | None) -> Runtime:
    return Runtime(config_dir, data_dir=tmp_path / "data", store=store_url)


async def test_a_failed_full_run_is_resumed_as_full_and_deletes(write_config, tmp_path, store_url) -> None:
    api = populated_api()
    async with serve(api):
        cfg = write_config([system(api.url), collect_pipe(**SINCE_AT_END)])
        async with runtime(cfg, tmp_path, store_url) as rt:
            assert (await rt.run_pipe("items")).new == 45
            for n in range(8):
                api.delete(f"i{n:02}")
            api.faults = [{"truncate": True, "path": "/items/page", "query": "page=5"}] * 10
            failed = await rt.run_pipe("items", full=True)
            assert failed.status == "failed" and "page=5" in str(failed.error)
            assert failed.changes == 0
            api.faults = []
            resumed = await rt.run_pipe("items")
            assert (resumed.kind, resumed.status, resumed.deleted) == ("full", "completed", 8)
            assert set(await ids(rt, "items")) == set(truth(api))


async def test_a_full_run_killed_before_its_first_batch_is_resumed_as_full(write_config, tmp_path, store_url) -> None:
    api = populated_api()
    async with serve(api):
        cfg = write_config([system(api.url), collect_pipe(**SINCE_AT_END)])
        async with runtime(cfg, tmp_path, store_url) as rt:
            assert (await rt.run_pipe("items")).new == 45
        for n in range(8):
            api.delete(f"i{n:02}")
        api.faults = [{"delay": 8, "path": "/items/page", "query": "page=2"}]  # the run hangs on page 2 (the
        # server then holds the response that long: its shutdown waits for it)
        api.requests.clear()
        data = tmp_path / "data"
        store = ["--store", store_url] if store_url else []
        proc = subprocess.Popen([SLUICE, "run", str(cfg), "--data-dir", str(data), "--full", *store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        try:
            with anyio.fail_after(60):
                while not any("page=2" in r for r in api.requests):
                    assert proc.poll() is None, "sluice run ended before it was killed"
                    await anyio.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        api.faults = []
        async with runtime(cfg, tmp_path, store_url) as rt:
            events = [e.event for e in await rt.execution_log("items")]
            assert events[-1] == "run-started", "the kill did not land inside the run"
            resumed = await rt.run_pipe("items")
            assert (resumed.kind, resumed.status, resumed.deleted) == ("full", "completed", 8)
            assert set(await ids(rt, "items")) == set(truth(api))

