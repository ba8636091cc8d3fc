"""SIGKILL of a `sluice run` process at several points of a share run against a target that does
not honour Idempotency-Key: the target's write log shows exactly one create per entity, and every
entity ends sent (the lookup by external reference runs before any re-send). On SQLite and
PostgreSQL (``store_url``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from tests.servers.target_api import TargetApi
from tests.share.conftest import entities, share_pipe, target_system

SLUICE = str(Path(sys.executable).parent / "sluice")


async def start(cfg: Path, data: Path, store_url: str | None) -> asyncio.subprocess.Process:
    env = {**os.environ, "SLUICE_DATA_DIR": str(data), "NO_COLOR": "1"}
    if store_url:
        env["SLUICE_STORE"] = store_url
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


def capture_pipe(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The side-effecting ``rest`` transform (capture response) doing the sink's inserts, its
    responses in the dataset ``share``."""
    return {"_id": "share", "type": "pipe", "source": {"type": "embedded", "entities": items},
            "transform": {"type": "rest", "system": "target", "operation": "insert", "side_effects": True,
                          "lookup_operation": "lookup", "concurrency": 8}}


@pytest.mark.parametrize("component", ["sink", "capture-transform"])
async def test_sigkill_between_the_write_and_its_commit_creates_nothing_twice(target: TargetApi, write_config,
                                                                               tmp_path, component: str,
                                                                               store_url: str | None) -> None:
    target.honour_idempotency = False
    target.latency = 0.03
    items = entities(60)
    pipe = share_pipe("share", items, lookup_operation="lookup") if component == "sink" else capture_pipe(items)
    cfg = write_config([target_system(target.url), pipe])
    data = tmp_path / "data"
    # 1. writes applied, their responses held: the kill lands between each write and its outcome
    target.faults = [{"delay_after": 3, "method": "POST", "path": "/records", "repeat": True}]
    await kill_when(await start(cfg, data, store_url), target, 1)
    held = len(target.creates())
    # 2. a kill in the middle of a run going at full speed (some outcomes committed, some not)
    target.faults = []
    await kill_when(await start(cfg, data, store_url), target, held + 15)
    # 3. held again, after the restart's lookups
    target.faults = [{"delay_after": 3, "method": "POST", "path": "/records", "repeat": True}]
    await kill_when(await start(cfg, data, store_url), target, len(target.creates()) + 1)
    target.faults = []
    final = await start(cfg, data, store_url)
    _, err = await final.communicate()
    assert final.returncode == 0, err.decode()[-2000:]
    refs = sorted(target.records[w["id"]]["ref"] for w in target.creates())
    assert refs == sorted(e["_id"] for e in items)  # exactly one create per entity
    async with Runtime(cfg, data_dir=data, store=store_url) as r:
        outcomes = {o["_id"]: o for o in await r.entities("share-responses", limit=1000)}
        captured = {e["_id"]: e for e in await r.entities("share", limit=1000)} if component != "sink" else {}
    assert {o["state"] for o in outcomes.values()} == {"sent"} and len(outcomes) == 60
    by_ref = {r["ref"]: k for k, r in target.records.items()}
    assert {k: o["generated_id"] for k, o in outcomes.items()} == by_ref
    if component != "sink":  # every response captured, also those of entities sent before a kill
        assert {k: e["response"]["id"] for k, e in captured.items() if "id" in (e["response"] or {})} == by_ref


def updates(target: TargetApi) -> list[dict]:
    return [w for w in target.log if w["op"] == "update"]


async def test_sigkill_during_inserts_and_updates_of_the_share_pipes(target: TargetApi, write_config,
                                                                    tmp_path, store_url: str | None) -> None:
    """The insert, collect, update and delete pipes (tests/share/patterns.py) run by `sluice run`
    against a target losing 10 % of the responses, SIGKILLed while creates are held, at full speed,
    and while updates are held: one create per entity, no update based on a stale read."""
    from tests.share.patterns import share_pipes
    from tests.share.test_locking import stale_updates
    from tests.share.test_patterns import converge, person

    target.honour_idempotency = False
    target.latency = 0.01
    target.chaos(0.1, seed=5, kinds=({"lost": True},))
    data = tmp_path / "data"

    def config(people: list[dict]) -> Path:
        return write_config([target_system(target.url),
                             {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": people}},
                             *share_pipes()])

    people = [person(i) for i in range(40)]
    cfg = config(people)
    target.faults = [{"delay_after": 3, "method": "POST", "path": "/records", "repeat": True}]
    await kill_when(await start(cfg, data, store_url), target, 3)
    target.faults = []
    await kill_when(await start(cfg, data, store_url), target, len(target.creates()) + 12)
    async with Runtime(cfg, data_dir=data, store=store_url) as r:
        await converge(r, "insert", "target-records", "update")
    people[:20] = [person(i, f"renamed {i}") for i in range(20)]
    cfg = config(people)
    target.touch(next(rid for rid, rec in target.records.items() if rec["ref"] == "p03"))
    target.faults = [{"delay_after": 3, "method": "PATCH", "repeat": True}]
    process = await start(cfg, data, store_url)
    for _ in range(600):
        if len(updates(target)) >= 2:
            break
        await asyncio.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    target.faults = []
    async with Runtime(cfg, data_dir=data, store=store_url) as r:
        await converge(r, "people", "insert", "target-records", "update")
    assert sorted(target.records[w["id"]]["ref"] for w in target.creates()) == [p["_id"] for p in people]
    assert {rec["ref"]: rec["name"] for rec in target.records.values()} == {p["_id"]: p["name"] for p in people}
    assert stale_updates(target) == [] and len(updates(target)) >= 20
