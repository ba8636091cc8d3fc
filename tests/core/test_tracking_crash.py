"""Crash safety of dependency tracking: ``sluice run`` SIGKILLed while a DTL pipe is putting the
customers whose addresses changed through again; after a restart nothing is missed: the pipe's
dataset equals the one an uninterrupted run from scratch over the same files gives (the crashed
runs on each store, the reference on SQLite)."""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime.store import make_store
from tests.core.helpers import write_ndjson
from tests.core.test_crash import kill_when, run_to_end, snapshot

N = 3_000
PIPES = [
    {"_id": "customers", "type": "pipe", "source": {"type": "file", "path": "customers.ndjson", "primary_key": "id"}},
    {"_id": "addresses", "type": "pipe", "source": {"type": "file", "path": "addresses.ndjson", "primary_key": "id"}},
    {"_id": "enriched", "type": "pipe", "batch_size": 50,
     "source": {"type": "dataset", "dataset": "customers"},
     "transform": {"type": "dtl", "rules": {"default": [
         ["copy", "*"],
         ["add", "streets", ["hops", {"datasets": ["addresses a"], "where": [["eq", "a.customer_id", "_S._id"]],
                                      "return": "a.street"}]]]}}},
]


def make_config(root: Path, version: int) -> Path:
    cfg = root / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(PIPES, sort_keys=False))
    write_ndjson(cfg / "customers.ndjson", [{"id": f"c{i:05}", "name": f"n{i}"} for i in range(N)])
    write_ndjson(cfg / "addresses.ndjson", [{"id": f"a{i:05}", "customer_id": f"c{i:05}", "street": f"s{i} v{version}"}
                                            for i in range(N)])
    return cfg


async def tracking_of(data: Path, store_url: str | None) -> dict[str, int]:
    store = make_store(store_url, data)
    await store.open()
    try:
        return (await store.pipe_state("enriched")).tracking
    finally:
        await store.close()


async def test_sigkill_with_pending_tracked_entities_then_restart_misses_nothing(
        tmp_path: Path, store_url: str | None) -> None:
    ref_cfg = make_config(tmp_path / "ref", version=2)
    run_to_end(ref_cfg, tmp_path / "ref" / "data")
    want = await snapshot(tmp_path / "ref" / "data")

    cfg = make_config(tmp_path / "crash", version=1)
    data = tmp_path / "crash" / "data"
    run_to_end(cfg, data, store_url)
    before = await tracking_of(data, store_url)
    make_config(tmp_path / "crash", version=2)  # every address changes: every customer is pending
    assert await kill_when(cfg, data, store_url, dataset="enriched", fraction=1.3, total=N)
    after_kill = await snapshot(data, store_url)
    assert N + 0.3 * N <= after_kill["enriched"]["committed"] + 1 < 2 * N  # killed mid-way
    assert await tracking_of(data, store_url) == before  # the offsets move only with the run's end
    # the restarted run finds every pending customer again
    assert await kill_when(cfg, data, store_url, dataset="enriched", fraction=1.7, total=N)
    run_to_end(cfg, data, store_url)

    got = await snapshot(data, store_url)
    assert got["enriched"]["latest"] == want["enriched"]["latest"]
    assert got["enriched"]["duplicates"] == 0
    assert (await tracking_of(data, store_url))["addresses"] > before["addresses"]
