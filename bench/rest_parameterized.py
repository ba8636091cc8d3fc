"""Bench (b) of issue 3: parameterized input. 10,000 entities, the server adds 20 ms per request,
the REST transform calls one operation per entity with concurrency 50. Ideal wall time:
10,000 x 0.02 / 50 = 4 s; target ratio <= 1.3.

Run: .venv/bin/python bench/rest_parameterized.py [--items N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import start_api, stop, write
from runtime import Runtime

LATENCY = 0.02
TARGET_RATIO = 1.3


async def bench(items: int, concurrency: int) -> None:
    proc, url = start_api(items, LATENCY)
    try:
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
                started = time.perf_counter()
                result = await rt.run_pipe("details")
                seconds = time.perf_counter() - started
            assert result.ok, result.error
            assert result.new == items, result
    finally:
        stop(proc)
    ideal = items * LATENCY / concurrency
    ratio = seconds / ideal
    print(f"rest parameterized: {items} calls, {LATENCY * 1000:.0f} ms server latency, concurrency "
          f"{concurrency}: {seconds:.2f} s wall, ideal {ideal:.2f} s, ratio {ratio:.2f} "
          f"(target <= {TARGET_RATIO}; {'met' if ratio <= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(bench(args.items, args.concurrency))
