"""Bench (a) of issue 12: 10,000 sends by the ``rest`` sink (one POST per entity), the server adds
20 ms per request, concurrency 50, each entity's outcome committed on its own in the outcome
ledger (``sending`` before the POST, ``sent`` after it). Ideal wall time: 10,000 x 0.02 / 50 =
4 s; target ratio <= 1.3.

The server is bench/_fast_http.py in its own process (``POST /records`` -> 201 with an id), as in
bench/rest_parameterized.py. The same POSTs made with a bare aiohttp client (one session,
``concurrency`` workers, body read and parsed, nothing recorded) are timed against the same server
first, so Sluice's own overhead (ledger commits included) is the difference of the two figures.
The entities are in a dataset written by a first pipe; only the share pipe is timed.

Run: .venv/bin/python bench/rest_share.py [--items N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import start_api, stop, write
from runtime import Runtime

LATENCY = 0.02
TARGET_RATIO = 1.3


def entities(items: int) -> list[dict[str, object]]:
    return [{"_id": f"e{n:06}", "name": f"entity {n}", "amount": n, "ref": f"e{n:06}"} for n in range(items)]


async def bare(url: str, items: int, concurrency: int) -> float:
    """Seconds a bare aiohttp client needs to POST every entity."""
    queue = iter(entities(items))

    async def worker(session: aiohttp.ClientSession) -> None:
        for entity in queue:
            async with session.post(f"{url}/records", data=orjson.dumps(entity),
                                    headers={"Content-Type": "application/json"}) as resp:
                orjson.loads(await resp.read())
                assert resp.status == 201

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started


async def sluice(url: str, items: int, concurrency: int) -> float:
    """Seconds the ``share`` pipe (dataset -> rest sink, ledger commits per entity) needs."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write(Path(tmp) / "config", [
            {"_id": "target", "type": "system:rest", "base_url": url, "concurrency": concurrency,
             "operations": {"insert": {"method": "POST", "url": "/records"}}},
            {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": entities(items)}},
            {"_id": "share", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
             "sink": {"type": "rest", "system": "target", "insert_operation": "insert",
                      "concurrency": concurrency}},
        ])
        async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
            assert (await rt.run_pipe("people")).ok
            started = time.perf_counter()
            result = await rt.run_pipe("share")
            seconds = time.perf_counter() - started
            ledger = await rt.entities("share-responses", limit=items + 1)
        assert result.ok, result.error
        assert result.new == items, result
        assert len(ledger) == items and all(o["state"] == "sent" for o in ledger)
        return seconds


async def bench(items: int, concurrency: int) -> None:
    proc, url = start_api(0, LATENCY, lean=True)
    try:
        baseline = await bare(url, items, concurrency)
        seconds = await sluice(url, items, concurrency)
    finally:
        stop(proc)
    ideal = items * LATENCY / concurrency
    ratio = seconds / ideal
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"rest share sink: {items} POSTs, {LATENCY * 1000:.0f} ms server latency, concurrency {concurrency}, "
          f"outcomes committed per entity: sluice {seconds:.2f} s wall, bare aiohttp {baseline:.2f} s, "
          f"ideal {ideal:.2f} s; ratio {ratio:.2f} (target <= {TARGET_RATIO}; "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}), bare ratio {baseline / ideal:.2f}, "
          f"sluice overhead {(seconds - baseline) / items * 1e6:.0f} us/send; load average {load}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(bench(args.items, args.concurrency))
