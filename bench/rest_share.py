"""Bench (a) of issue 12: 10,000 sends (one POST per entity), the server adds 20 ms per request,
concurrency 50, each entity's outcome committed on its own in the outcome ledger. Ideal wall
time: 10,000 x 0.02 / 50 = 4 s; target ratio <= 1.3.

``--component sink`` (the default) times the ``rest`` sink; ``--component transform`` the
side-effecting ``rest`` transform (capture response with transform: the same ledger, and the
responses written to a dataset). The server is bench/_fast_http.py in its own process
(``POST /records`` -> 201 with an id), as in bench/rest_parameterized.py. The same POSTs made with
a bare aiohttp client (bench/_rest_common.py) are timed against the same server first, so Sluice's
own overhead (ledger commits included) is the difference of the two figures; CPU time per send is
this process's (the client's threads, the SQLite writer's included; the server runs elsewhere).
The entities are in a dataset written by a first pipe; only the share pipe is timed.

A transform's batches are not coalesced as a sink's are (each of the 10 batches of 1,000 ends with
its last calls and its ledger drain), so ``--batch-size`` changes its figure most.

Run: .venv/bin/python bench/rest_share.py [--items N] [--concurrency C] [--component sink|transform]
[--batch-size B]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import bare, latency_summary, start_api, stop, write
from runtime import Runtime

LATENCY = 0.02
TARGET_RATIO = 1.3


def entities(items: int) -> list[dict[str, object]]:
    return [{"_id": f"e{n:06}", "name": f"entity {n}", "amount": n, "ref": f"e{n:06}"} for n in range(items)]


def share_pipe(component: str, concurrency: int, batch_size: int) -> dict[str, Any]:
    pipe: dict[str, Any] = {"_id": "share", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
                            "batch_size": batch_size}
    if component == "sink":
        pipe["sink"] = {"type": "rest", "system": "target", "insert_operation": "insert", "concurrency": concurrency}
    else:
        pipe["transform"] = {"type": "rest", "system": "target", "operation": "insert", "side_effects": True,
                             "concurrency": concurrency}
    return pipe


async def sluice(url: str, items: int, concurrency: int, component: str, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds the ``share`` pipe (dataset -> rest sink or transform) needs."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write(Path(tmp) / "config", [
            {"_id": "target", "type": "system:rest", "base_url": url, "concurrency": concurrency,
             "operations": {"insert": {"method": "POST", "url": "/records"}}},
            {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": entities(items)}},
            share_pipe(component, concurrency, batch_size),
        ])
        async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
            assert (await rt.run_pipe("people")).ok
            wall, cpu = time.perf_counter(), time.process_time()
            result = await rt.run_pipe("share")
            seconds = time.perf_counter() - wall, time.process_time() - cpu
            ledger = await rt.entities("share-responses", limit=items + 1)
        assert result.ok, result.error
        assert result.new == items, result
        assert len(ledger) == items and all(o["state"] == "sent" for o in ledger)
        return seconds


async def bench(items: int, concurrency: int, component: str, batch_size: int) -> None:
    proc, url = start_api(0, LATENCY, lean=True)
    try:
        posts = (("POST", "/records", orjson.dumps(e)) for e in entities(items))
        baseline = await bare(url, posts, concurrency, 201)
        seconds = await sluice(url, items, concurrency, component, batch_size)
    finally:
        stop(proc)
    print(f"rest share {component} (batch_size {batch_size}): {items} POSTs, {LATENCY * 1000:.0f} ms server latency, "
          f"concurrency {concurrency}, "
          f"outcomes committed per entity: "
          f"{latency_summary(items, LATENCY, concurrency, TARGET_RATIO, seconds, baseline, 'send')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--component", choices=["sink", "transform"], default="sink")
    parser.add_argument("--batch-size", type=int, default=1000, help="the share pipe's batch_size (Sluice's default)")
    args = parser.parse_args()
    asyncio.run(bench(args.items, args.concurrency, args.component, args.batch_size))
