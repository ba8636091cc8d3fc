"""Crash safety of dependency tracking: ``sluice run`` SIGKILLed while a DTL pipe is putting the
customers whose addresses changed through again; after a restart nothing is missed: the pipe's
dataset equals the one an uninterrupted run from scratch over the same files gives."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from runtime.store import SqliteStore
from tests.core.helpers import write_ndjson
from tests.core.test_crash import committed, run_to_end, snapshot, start

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


def kill_at(cfg: Path, data: Path, enriched_versions: int) -> None:
    """Run and SIGKILL once ``enriched`` has ``enriched_versions`` versions committed."""
    proc = start(cfg, data)
    db = data / "sluice.db"
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if committed(db, "enriched") + 1 >= enriched_versions:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return
            assert time.monotonic() - t0 < 90, "the run neither reached the kill point nor ended"
            time.sleep(0.003)
        raise AssertionError(f"the run ended before enriched reached {enriched_versions} versions")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def tracking_of(data: Path) -> dict[str, int]:
    store = SqliteStore(data / "sluice.db")
    await store.open()
    try:
        return (await store.pipe_state("enriched")).tracking
    finally:
        await store.close()


async def test_sigkill_with_pending_tracked_entities_then_restart_misses_nothing(tmp_path: Path) -> None:
    ref_cfg = make_config(tmp_path / "ref", version=2)
    run_to_end(ref_cfg, tmp_path / "ref" / "data")
    want = await snapshot(tmp_path / "ref" / "data")

    cfg = make_config(tmp_path / "crash", version=1)
    data = tmp_path / "crash" / "data"
    run_to_end(cfg, data)
    before = await tracking_of(data)
    make_config(tmp_path / "crash", version=2)  # every address changes: every customer is pending
    kill_at(cfg, data, N + int(0.3 * N))
    after_kill = await snapshot(data)
    assert N + 0.3 * N <= after_kill["enriched"]["committed"] + 1 < 2 * N  # killed mid-way
    assert await tracking_of(data) == before  # the offsets move only with the run's end
    kill_at(cfg, data, N + int(0.7 * N))  # the restarted run finds every pending customer again
    run_to_end(cfg, data)

    got = await snapshot(data)
    assert got["enriched"]["latest"] == want["enriched"]["latest"]
    assert got["enriched"]["duplicates"] == 0
    assert (await tracking_of(data))["addresses"] > before["addresses"]
