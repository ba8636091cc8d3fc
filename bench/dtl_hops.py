"""Hop and dependency-tracking benchmark (issue 10 benches (b) and (c)).

Usage::

    .venv/bin/python bench/dtl_hops.py [--customers 1000000] [--changes 100] [--state DIR]

Writes ``--customers`` customers and 1.5 times as many addresses (each address belongs to one
customer, ``customer_id``) straight into a fresh SQLite store, then:

(b) runs a ``dtl`` pipe from ``customers`` hopping to each customer's addresses (a 1-n join on
    ``addresses.customer_id``, answered by the hop index) into a dataset: entities per second of
    that full run (the index build on first use included; target >= 20,000/s);
(c) changes ``--changes`` addresses (each of a different customer) and runs the pipe again,
    incrementally: the customers it processed (must equal the customers affected) and the
    milliseconds of that run (target < 200 ms; at 1,000,000 customers within 1.5x the figure at
    100,000, so run it at both sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from runtime import Runtime
from runtime.heap import freeze_startup_heap

TARGET_HOPS = 20_000  # entities/s
TARGET_TRACKING_MS = 200.0
WRITE_BATCH = 10_000

RULES = {"default": [
    ["copy", "_id"],
    ["copy", "name"],
    ["add", "addresses", ["hops", {"datasets": ["addresses a"], "where": [["eq", "a.customer_id", "_S._id"]],
                                   "return": "a.street"}]],
]}


def customer(i: int) -> dict[str, Any]:
    return {"_id": f"c{i:07}", "name": f"name {i}"}


def address(i: int, customers: int, street: str = "street") -> dict[str, Any]:
    return {"_id": f"a{i:07}", "customer_id": f"c{i % customers:07}", "street": f"{street} {i}"}


async def load(rt: Runtime, dataset: str, count: int, make: Any) -> None:
    for start in range(0, count, WRITE_BATCH):
        batch = [make(i) for i in range(start, min(count, start + WRITE_BATCH))]
        await rt.store.write_batch(dataset, batch, pipe=f"load-{dataset}", checkpoint=None,
                                   populate=start + WRITE_BATCH >= count)


async def measure(customers: int, changes: int, state: Path) -> dict[str, float]:
    config = state / "config"
    config.mkdir(parents=True)
    pipe = {"_id": "enriched", "type": "pipe", "source": {"type": "dataset", "dataset": "customers"},
            "transform": {"type": "dtl", "rules": RULES}}
    (config / "pipes.yaml").write_text(yaml.safe_dump([pipe], sort_keys=False))
    addresses = customers * 3 // 2
    async with Runtime(config, data_dir=state / "state") as rt:
        freeze_startup_heap()  # as `sluice run` does once its runtime is open
        t0 = time.perf_counter()
        await load(rt, "customers", customers, customer)
        await load(rt, "addresses", addresses, lambda i: address(i, customers))
        t1, c1 = time.perf_counter(), time.process_time()
        full = await rt.run_pipe("enriched")
        t2, c2 = time.perf_counter(), time.process_time()
        assert full.ok and full.read == customers, full
        changed = [address(i, customers, "moved") for i in range(changes)]  # customers c0..c{changes-1}
        await rt.store.write_batch("addresses", changed, pipe="load-addresses", checkpoint=None)
        t3 = time.perf_counter()
        again = await rt.run_pipe("enriched")
        t4 = time.perf_counter()
        assert again.ok, again
        sample = (await rt.entity("enriched", customer(0)["_id"]))[-1]
        assert "moved 0" in sample["addresses"], sample
    return {"customers": customers, "addresses": addresses, "load_s": t1 - t0, "full_s": t2 - t1, "full_cpu_s": c2 - c1,
            "processed": again.read, "affected": min(changes, customers), "tracking_ms": (t4 - t3) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--state", type=Path, default=None, help="directory for the store (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.state) as tmp:
        r = asyncio.run(measure(args.customers, args.changes, Path(tmp)))
    rate = r["customers"] / r["full_s"]
    print(f"customers: {r['customers']:,}, addresses: {r['addresses']:,} (loaded in {r['load_s']:.1f} s)")
    print(f"(b) full run hopping to addresses: {r['full_s']:.1f} s, {rate:,.0f} entities/s "
          f"(target >= {TARGET_HOPS:,}/s: ratio {rate / TARGET_HOPS:.2f}); CPU {r['full_cpu_s']:.1f} s, "
          f"{r['full_cpu_s'] / r['customers'] * 1e6:.0f} us per entity")
    ok = r["processed"] == r["affected"]
    print(f"(c) {args.changes} changed addresses, next run: {r['processed']:,} customers processed "
          f"({r['affected']:,} affected: {'equal' if ok else 'NOT equal'}), {r['tracking_ms']:.0f} ms "
          f"(target < {TARGET_TRACKING_MS:.0f} ms: ratio {r['tracking_ms'] / TARGET_TRACKING_MS:.2f})")


if __name__ == "__main__":
    main()
