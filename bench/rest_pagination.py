"""Bench (a)+(c) of issue 3: 200,000 entities in pages of 500 from a local REST server into a
dataset; entities per second and peak RSS of the client process (target < 300 MB).

Run: .venv/bin/python bench/rest_pagination.py [--items N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import peak_rss_mb, start_api, stop, write
from runtime import Runtime

RSS_TARGET_MB = 300.0


async def bench(items: int) -> None:
    proc, url = start_api(items)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write(Path(tmp) / "config", [
                {"_id": "api", "type": "system:rest", "base_url": url},
                {"_id": "items", "type": "pipe", "source": {
                    "type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
                    "id_expression": "{{ id }}",
                    "paging": {"type": "page", "page_size": 500, "size_param": "per_page"}}},
            ])
            async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
                started = time.perf_counter()
                result = await rt.run_pipe("items")
                seconds = time.perf_counter() - started
            assert result.ok, result.error
            assert result.new == items, result
    finally:
        stop(proc)
    rss = peak_rss_mb()
    print(f"rest pagination: {items} entities, pages of 500, {seconds:.2f} s, "
          f"{items / seconds:,.0f} entities/s")
    print(f"peak RSS of the client: {rss:.0f} MB (target < {RSS_TARGET_MB:.0f} MB; "
          f"ratio to target {rss / RSS_TARGET_MB:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    asyncio.run(bench(parser.parse_args().items))
