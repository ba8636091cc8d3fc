"""Work-unit ledger benchmark (issue 9 (b)): 100,000 units planned, claimed and finished with no I/O.

Usage::

    .venv/bin/python bench/workunits_ledger.py [--units 100000] [--claim 500] [--workdir DIR]

The ledger alone, on a fresh SQLite store, the way :class:`runtime.workunits.executor.UnitRunner`
drives it: one ``plan_units`` call for all units, then ``claim_units`` in batches of ``--claim``
and, per claimed batch, one checkpoint carrying every unit's ``done`` progress (what a sink commits
with its entities), then a second planning of the same units (the next run's). Prints each phase's
seconds, the units per second of the whole (plan + claim + finish), and the ratio to the target of
20,000 units/s (>= 1 meets it).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from runtime.store import Checkpoint, SqliteStore
from runtime.store.protocol import UnitProgress

TARGET = 20_000.0


async def measure(units: int, claim: int, workdir: Path) -> dict[str, float]:
    store = SqliteStore(workdir / "ledger.db")
    await store.open()
    try:
        planned = [(f"survey-{i // 52:05d}|week-{i % 52:02d}", {"survey": i // 52, "week": i % 52}, i % 52 < 50)
                   for i in range(units)]
        t0 = time.perf_counter()
        await store.plan_units("bench", planned)
        t1 = time.perf_counter()
        claimed_total = 0
        claim_s = finish_s = 0.0
        while True:
            c0 = time.perf_counter()
            batch = await store.claim_units("bench", "run-1", limit=claim, lease_s=300)
            c1 = time.perf_counter()
            claim_s += c1 - c0
            if not batch:
                break
            claimed_total += len(batch)
            progress = {u.key: UnitProgress("done", watermark=u.variables["week"]) for u in batch}
            await store.save_checkpoint("bench", Checkpoint(None, None, progress))
            finish_s += time.perf_counter() - c1
        t2 = time.perf_counter()
        await store.plan_units("bench", planned)  # the next run plans the same units again
        replan_s = time.perf_counter() - t2
        counts = await store.unit_counts("bench")
        assert claimed_total == units and counts == {"done": units}, (claimed_total, counts)
        return {"plan_s": t1 - t0, "claim_s": claim_s, "finish_s": finish_s, "total_s": t2 - t0,
                "replan_s": replan_s}
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--claim", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(measure(args.units, args.claim, args.workdir or Path(tmp)))
    rate = args.units / figures["total_s"]
    print(f"units                          {args.units:>10,}")
    print(f"plan (one call)                {figures['plan_s']:>10.3f} s")
    print(f"claim (batches of {args.claim:<5})       {figures['claim_s']:>10.3f} s")
    print(f"finish (progress commits)      {figures['finish_s']:>10.3f} s")
    print(f"plan again (next run)          {figures['replan_s']:>10.3f} s")
    print(f"plan + claim + finish          {rate:>10,.0f} units/s   target >= {TARGET:,.0f}/s   "
          f"ratio {rate / TARGET:.2f}")


if __name__ == "__main__":
    main()
