"""The ``rest`` sink against our target API: ledger, skip of unchanged sends, idempotency keys,
lost responses, retries across runs then dead letters, the error-ratio gate, JSON Schema."""

from __future__ import annotations

from pathlib import Path

from runtime import Runtime
from tests.share.conftest import entities, share_pipe, target_system
from tests.servers.target_api import TargetApi


def rt(cfg: Path, tmp_path: Path) -> Runtime:
    return Runtime(cfg, data_dir=tmp_path / "data")


async def ledger(r: Runtime, pipe: str) -> dict[str, dict]:
    return {e["_id"]: e for e in await r.entities(f"{pipe}-responses", limit=100_000)}


async def test_inserts_once_and_skips_unchanged_entities(target: TargetApi, write_config, tmp_path) -> None:
    target.latency = 0.02
    cfg = write_config([target_system(target.url), share_pipe("share", entities(30))])
    async with rt(cfg, tmp_path) as r:
        first = await r.run_pipe("share")
        assert first.ok and first.new == 30
        assert len(target.creates()) == 30 and target.max_in_flight > 1
        outcomes = await ledger(r, "share")
        assert {o["state"] for o in outcomes.values()} == {"sent"}
        assert {o["generated_id"] for o in outcomes.values()} == set(target.records)
        assert all(o["attempt"] == 1 and o["status"] == 201 for o in outcomes.values())
        second = await r.run_pipe("share")
        assert second.ok and second.unchanged == 30 and second.new == 0
        assert len(target.creates()) == 30  # nothing sent again
