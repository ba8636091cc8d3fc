"""Bench (c) of the work-units issue: one asynchronous job of 1,000,000 CSV rows in chunks of
10,000 (``tests/servers/bulk_api.py`` in its own process) through the ``rest`` source's ``job``
into a dataset; rows per second (target >= 40,000/s) and peak RSS of the client process (target
< 300 MB; it holds one chunk at a time, whatever the job's size).

Run: .venv/bin/python bench/rest_async_job.py [--rows N] [--chunk C]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import REPO, peak_rss_mb, stop, write
from runtime import Runtime

ROWS_TARGET = 40_000.0
RSS_TARGET_MB = 300.0


def source(chunk: int) -> dict[str, object]:
    """The example's source (config/examples/rest-async-job) with fast polling."""
    return {"type": "rest", "system": "bulk", "id_expression": "{{ Id }}", "job": {
        "start": {"url": "/jobs", "payload": {"query": "SELECT Id FROM Account"}, "id_expression": "{{ response.id }}"},
        "status": {"url": "/jobs/{{ job }}", "ready_expression": "{{ response.state == 'JobComplete' }}",
                   "failed_expression": "{{ response.state == 'Failed' }}", "poll_interval_s": 0.1},
        "results": {"url": "/jobs/{{ job }}/results", "params": {"maxRecords": str(chunk)},
                    "locator_header": "Sforce-Locator"},
        "cleanup": {"url": "/jobs/{{ job }}"}}}


async def bench(rows: int, chunk: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.bulk_api", "--port", "0", "--rows", str(rows),
                             "--chunk", str(chunk), "--polls", "1"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write(Path(tmp) / "config", [
                {"_id": "bulk", "type": "system:rest", "base_url": url},
                {"_id": "accounts", "type": "pipe", "source": source(chunk)}])
            async with Runtime(cfg, data_dir=Path(tmp) / "data") as rt:
                started = time.perf_counter()
                result = await rt.run_pipe("accounts")
                seconds = time.perf_counter() - started
            assert result.ok and result.new == rows, result
    finally:
        stop(proc)
    rate, rss = rows / seconds, peak_rss_mb()
    print(f"{rows:,} rows in chunks of {chunk:,}: {seconds:.1f} s, {rate:,.0f} rows/s "
          f"(ratio {rate / ROWS_TARGET:.2f} of >= {ROWS_TARGET:,.0f}/s)")
    print(f"peak RSS {rss:.0f} MB (ratio {rss / RSS_TARGET_MB:.2f} of < {RSS_TARGET_MB:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(bench(args.rows, args.chunk))


if __name__ == "__main__":
    main()
