"""Merge source benchmark (issue 12, bench (b)): two datasets of N entities, one equality rule.

Usage::

    .venv/bin/python bench/merge_source.py [--n 500000] [--changes 1000] [--workdir DIR]

Two ``file`` pipes write the datasets ``crm`` (``email``) and ``erp`` (``mail``); 90 % of the
``erp`` entities share their ``mail`` with one ``crm`` entity's ``email`` (in shuffled order), the
rest match nothing. A ``merge`` pipe (``["eq", "c.email", "e.mail"]``) merges them into a dataset.

Figures:

(b) the merge pipe's first full run: input entities (2 N) per second of the run (the hop
    indexes on ``email`` and ``mail`` built on the way, the merged entities written): target
    >= 20,000/s.
(b1) the same pipe's full run again (``--full``), nothing changed: the indexes are there and
    every write is a no-op (no target).
(b2) an incremental run after ``--changes`` ``erp`` entities changed their ``mail`` (each one an
    unmerge and a new merge): its seconds, and changed input entities per second (no target). The
    first incremental run after the full run also builds the merged dataset's index on ``$ids``
    (the full run's sink dataset did not exist when it started), so (b3) repeats (b2) with new
    changes: the steady state.

Every run is timed by the pipe's own seconds (:class:`runtime.pipes.RunResult`); the writers'
runs are set-up and not timed. The peak RSS is the whole process's (set-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core_dataset import calibration_s, row
from runtime import Runtime

PIPES = """\
- {_id: crm, type: pipe, source: {type: file, path: crm.ndjson}, sink: {type: dataset}}
- {_id: erp, type: pipe, source: {type: file, path: erp.ndjson}, sink: {type: dataset}}
- _id: merged
  type: pipe
  source: {type: merge, datasets: [crm c, erp e], equality: [[eq, c.email, e.mail]]}
  sink: {type: dataset}
"""


def write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def generate(cfg: Path, n: int, rng: random.Random) -> list[dict[str, object]]:
    """Write both inputs; returns the erp records (changed later)."""
    write(cfg / "crm.ndjson", [{"_id": f"c{i:07d}", "email": f"{i}@x", "name": f"crm {i}", "n": i} for i in range(n)])
    order = list(range(n))
    rng.shuffle(order)
    erp = [{"_id": f"e{i:07d}", "mail": f"{j}@x" if i % 10 else f"none-{i}", "city": f"city {i % 50}"}
           for i, j in enumerate(order)]
    write(cfg / "erp.ndjson", erp)
    return erp


async def run(rt: Runtime, pipe: str, *, full: bool = False) -> Any:
    result = await rt.run_pipe(pipe, full=full)
    if not result.ok:
        raise SystemExit(f"pipe {pipe} failed: {result.error}")
    return result


async def bench(root: Path, n: int, changes: int) -> None:
    rng = random.Random(7)
    cfg = root / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "pipes.yaml").write_text(PIPES)
    erp = generate(cfg, n, rng)
    load_before, speed_before = os.getloadavg()[0], calibration_s()
    async with Runtime(cfg, data_dir=root / f"data-{time.strftime('%H%M%S')}") as rt:
        for writer in ("crm", "erp"):
            await run(rt, writer)
        full = await run(rt, "merged")
        again = await run(rt, "merged", full=True)
        incremental = []
        for _ in range(2):
            for i in rng.sample(range(n), changes):
                erp[i] = {**erp[i], "mail": f"{rng.randrange(n)}@x"}
            write(cfg / "erp.ndjson", erp)
            await run(rt, "erp")
            incremental.append(await run(rt, "merged"))
    rows = [
        row(f"(b) merge full run, 2 x {n:,} entities, one equality rule", 2 * n / full.seconds,
            "entities/s", ">=", 20_000),
    ]
    print("| figure | measured | target | ratio | |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    first, steady = incremental
    print()
    print(f"info: (b) {full.seconds:.1f} s, {full.new:,} merged entities written; (b1) the full run again: "
          f"{again.seconds:.1f} s, {2 * n / again.seconds:,.0f} entities/s, {again.unchanged:,} no-op writes; "
          f"(b2) incremental after {changes:,} erp changes, $ids index built: {first.seconds:.2f} s, "
          f"{first.read:,} merged entities and tombstones emitted; (b3) again: {steady.seconds:.2f} s "
          f"({changes / steady.seconds:,.0f} changed entities/s), {steady.read:,} emitted; "
          f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; calibration loop "
          f"{speed_before:.2f} s before, {calibration_s():.2f} s after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500_000, help="entities per input dataset")
    parser.add_argument("--changes", type=int, default=1_000, help="erp entities changed for (b2)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = args.workdir or Path(tmp)
        asyncio.run(bench(root, args.n, args.changes))


if __name__ == "__main__":
    main()
