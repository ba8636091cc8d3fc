"""Bench (b) of issue 3: parameterized input. 10,000 entities, the server adds 20 ms per request,
the REST transform calls one operation per entity with concurrency 50. Ideal wall time:
10,000 x 0.02 / 50 = 4 s; target ratio <= 1.3.

The server is bench/_fast_http.py in its own process (the aiohttp test API is itself a bottleneck
on two cores; ``--server faulty`` uses it anyway). The same calls made with a bare aiohttp client
(one session, ``concurrency`` workers, body read and parsed) are timed against the same server
first, so Sluice's own overhead is the difference of the two figures.

Run: .venv/bin/python bench/rest_parameterized.py [--items N] [--concurrency C] [--server fast|faulty]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import bare, latency_summary, start_api, stop, write
from runtime import Runtime

LATENCY = 0.02
TARGET_RATIO = 1.3


async def sluice(url: str, items: int, concurrency: int) -> tuple[float, float]:
    """(wall, CPU) seconds the ``details`` pipe (REST transform, one call per entity) needs."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write(Path(tmp) / "config", [
            {"_id": "api", "type": "system:rest", "base_url": url, "concurrency": concurrency},
            {"_id": "ids", "type": "pipe", "source": {
                "type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
                "id_expression": "{{ id }}",
                "paging": {"type": "page", "page_size": 500, "size_param": "per_page"}}},
            {"_id": "details", "type": "pipe", "source": {"type": "dataset", "dataset": "ids"},
             "transform": {"type": "rest", "system": "api", "url": "/items/{{ entity.id }}",
                           "concurrency": concurrency, "response_property": "detail"}},
        ])
        async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
            assert (await rt.run_pipe("ids")).ok
            wall, cpu = time.perf_counter(), time.process_time()
            result = await rt.run_pipe("details")
            seconds = time.perf_counter() - wall, time.process_time() - cpu
        assert result.ok, result.error
        assert result.new == items, result
        return seconds


async def bench(items: int, concurrency: int, server: str) -> None:
    proc, url = start_api(items, LATENCY, lean=server == "fast")
    try:
        baseline = await bare(url, (("GET", f"/items/i{n:07}", None) for n in range(items)), concurrency, 200)
        seconds = await sluice(url, items, concurrency)
    finally:
        stop(proc)
    print(f"rest parameterized ({server} server): {items} calls, {LATENCY * 1000:.0f} ms server latency, "
          f"concurrency {concurrency}: "
          f"{latency_summary(items, LATENCY, concurrency, TARGET_RATIO, seconds, baseline, 'call')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--server", choices=["fast", "faulty"], default="fast")
    args = parser.parse_args()
    asyncio.run(bench(args.items, args.concurrency, args.server))
