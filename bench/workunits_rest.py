"""Work-units benchmark (issue 9 (a)): 1,000 units, one request each, the server adds 50 ms per
request, ``max_concurrent_units`` 20. Ideal wall time: 1,000 x 0.05 / 20 = 2.5 s; target ratio
(wall time / ideal) <= 1.3.

Each unit is one ``values`` item; the ``rest`` source asks ``GET /items/{{ unit.value }}`` (one
record) for it, so the run plans, claims, runs and commits 1,000 units, each with its own ledger
progress. The server is bench/_fast_http.py in its own process (as for the other REST benches).
The same 1,000 requests made by a bare aiohttp client with 20 workers against the same server are
timed first, so Sluice's own overhead is the difference of the two figures.

Run: .venv/bin/python bench/workunits_rest.py [--units N] [--concurrency C]
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
from bench.rest_parameterized import bare
from runtime import Runtime

LATENCY = 0.05
TARGET_RATIO = 1.3


async def sluice(url: str, units: int, concurrency: int) -> tuple[float, dict[str, int]]:
    """Seconds of the ``units`` pipe's run (config load and store open excluded) and its unit tally."""
    ids = [f"i{n:07}" for n in range(units)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write(Path(tmp) / "config", [
            {"_id": "api", "type": "system:rest", "base_url": url, "concurrency": concurrency},
            {"_id": "units", "type": "pipe", "source": {
                "type": "rest", "system": "api", "url": "/items/{{ unit.value }}", "id_expression": "{{ id }}",
                "work_units": {"values": ids, "max_concurrent_units": concurrency}}},
        ])
        async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
            started = time.perf_counter()
            result = await rt.run_pipe("units")
            seconds = time.perf_counter() - started
        assert result.ok and result.units is not None, result.error
        assert result.units["done"] == units and result.new == units, result
        return seconds, result.units


async def bench(units: int, concurrency: int) -> None:
    proc, url = start_api(units, LATENCY, lean=True)
    try:
        baseline = await bare(url, [f"i{n:07}" for n in range(units)], concurrency)
        seconds, tally = await sluice(url, units, concurrency)
    finally:
        stop(proc)
    ideal = units * LATENCY / concurrency
    ratio = seconds / ideal
    print(f"units {units}, one request each, server latency {LATENCY * 1000:.0f} ms, "
          f"max_concurrent_units {concurrency}: ideal {ideal:.2f} s")
    print(f"bare aiohttp client, {concurrency} workers   {baseline:8.2f} s   ratio {baseline / ideal:.2f}")
    print(f"sluice run (units done {tally['done']})       {seconds:8.2f} s   ratio {ratio:.2f}   "
          f"target <= {TARGET_RATIO}   {'met' if ratio <= TARGET_RATIO else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(bench(args.units, args.concurrency))


if __name__ == "__main__":
    main()
