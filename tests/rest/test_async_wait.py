"""``sluice run`` (a subprocess) and jobs that are not ready within a run: it waits for the waiting
unit, showing the job's state, and runs the pipe again when the poll is due; ``--no-wait`` ends
with the unit waiting, and a later ``sluice run`` re-attaches the job."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from runtime import Runtime
from tests.rest.async_jobs import job_config
from tests.rest.conftest import ids
from tests.servers.bulk_api import BulkApi, serve

SLUICE = str(Path(sys.executable).parent / "sluice")
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}


async def sluice_run(cfg: Path, data: Path, *flags: str) -> tuple[int, str]:
    done = await anyio.run_process([SLUICE, "run", str(cfg), "--data-dir", str(data), *flags], check=False, env=ENV)
    return done.returncode, done.stderr.decode()


async def dataset(cfg: Path, data: Path) -> tuple[int, list[str]]:
    async with Runtime(cfg, data_dir=data) as rt:
        return len(await ids(rt, "accounts")), [u.status for u in await rt.store.work_units("accounts")]


async def test_sluice_run_waits_for_a_slow_job_showing_its_state(write_config, tmp_path):
    api = BulkApi(rows=1500, chunk=1000)
    api.ready_after_polls = 3
    async with serve(api):
        cfg = write_config(job_config(api.url, max_wait_in_run_s=0, poll_interval_s=0.1))
        code, stderr = await sluice_run(cfg, tmp_path / "data")
        assert code == 0, stderr[-2000:]
        job = api.created[0].id
        assert f"accounts/job: job {job} created, next poll in" in stderr
        assert f"accounts/job: job {job} InProgress, next poll in" in stderr
        assert await dataset(cfg, tmp_path / "data") == (1500, ["done"])
        assert len(api.created) == 1 and api.created[0].polls == 3


async def test_no_wait_leaves_the_unit_waiting_and_a_later_run_re_attaches_the_job(write_config, tmp_path):
    api = BulkApi(rows=1500, chunk=1000)
    async with serve(api):
        cfg = write_config(job_config(api.url, max_wait_in_run_s=0, poll_interval_s=0.05))
        code, stderr = await sluice_run(cfg, tmp_path / "data", "--no-wait")
        assert code == 0, stderr[-2000:]
        assert "next poll in" not in stderr
        assert await dataset(cfg, tmp_path / "data") == (0, ["waiting"])
        code, stderr = await sluice_run(cfg, tmp_path / "data")
        assert code == 0, stderr[-2000:]
        assert await dataset(cfg, tmp_path / "data") == (1500, ["done"])
        assert len(api.created) == 1
