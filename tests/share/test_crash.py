"""SIGKILL of a `sluice run` process at several points of a share run against a target that does
not honour Idempotency-Key: the target's write log shows exactly one create per entity, and every
entity ends sent (the lookup by external reference runs before any re-send)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from runtime import Runtime
from tests.servers.target_api import TargetApi
from tests.share.conftest import entities, share_pipe, target_system

SLUICE = str(Path(sys.executable).parent / "sluice")


async def start(cfg: Path, data: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "SLUICE_DATA_DIR": str(data), "NO_COLOR": "1"}
    return await asyncio.create_subprocess_exec(SLUICE, "run", str(cfg), env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)


async def kill_when(process: asyncio.subprocess.Process, target: TargetApi, creates: int) -> None:
    """SIGKILL ``process`` once the target applied ``creates`` creates (or fail if it exits)."""
    for _ in range(600):
        if len(target.creates()) >= creates:
            process.send_signal(signal.SIGKILL)
            await process.wait()
            return
        assert process.returncode is None, "the run ended before the kill point"
        await asyncio.sleep(0.02)
    raise AssertionError(f"the target never reached {creates} creates")


async def test_sigkill_between_the_write_and_its_commit_creates_nothing_twice(target: TargetApi, write_config,
                                                                               tmp_path) -> None:
    target.honour_idempotency = False
    target.latency = 0.03
    items = entities(60)
    cfg = write_config([target_system(target.url), share_pipe("share", items, lookup_operation="lookup")])
    data = tmp_path / "data"
    # 1. writes applied, their responses held: the kill lands between each write and its outcome
    target.faults = [{"delay_after": 3, "method": "POST", "path": "/records", "repeat": True}]
    await kill_when(await start(cfg, data), target, 1)
    held = len(target.creates())
    # 2. a kill in the middle of a run going at full speed (some outcomes committed, some not)
    target.faults = []
    await kill_when(await start(cfg, data), target, held + 15)
    # 3. held again, after the restart's lookups
    target.faults = [{"delay_after": 3, "method": "POST", "path": "/records", "repeat": True}]
    await kill_when(await start(cfg, data), target, len(target.creates()) + 1)
    target.faults = []
    final = await start(cfg, data)
    _, err = await final.communicate()
    assert final.returncode == 0, err.decode()[-2000:]
    refs = sorted(target.records[w["id"]]["ref"] for w in target.creates())
    assert refs == sorted(e["_id"] for e in items)  # exactly one create per entity
    async with Runtime(cfg, data_dir=data) as r:
        outcomes = {o["_id"]: o for o in await r.entities("share-responses", limit=1000)}
    assert {o["state"] for o in outcomes.values()} == {"sent"} and len(outcomes) == 60
    assert {k: o["generated_id"] for k, o in outcomes.items()} == {r["ref"]: k for k, r in target.records.items()}
