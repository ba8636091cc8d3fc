"""Publisher throughput and API latency of a real ``sluice serve`` process.

Starts the daemon on 127.0.0.1 with a receiver pipe and a JSON pull publisher over its dataset,
fills the dataset by JSON push, then measures:

1. entities/s streamed by ``GET /api/publishers/pub/entities`` to one client (whole dataset);
2. entities/s (aggregate) streamed to 20 concurrent clients;
3. latency of ``GET /api/pipes`` (p50, p99) while the 20 clients stream.

Clients parse every response body (orjson), so client cost is included. Run::

    .venv/bin/python bench/daemon_publisher.py [--entities 100000]

Targets (chosen for one small machine, 2 cores): one client >= 50 000 entities/s; 20 clients
>= 50 000 entities/s aggregate; p99 of GET /api/pipes under that load <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import yaml

SLUICE = str(Path(sys.executable).parent / "sluice")
TOKEN = "bench-admin"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TARGET_ONE, TARGET_MANY, TARGET_P99_MS = 50_000, 50_000, 250.0
CONFIG = [
    {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"}},
    {"_id": "pub", "type": "pipe", "source": {"type": "dataset", "dataset": "inbox"},
     "sink": {"type": "http_endpoint"}},
]


def start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    (root / "config").mkdir()
    (root / "config" / "pipes.yaml").write_text(yaml.safe_dump(CONFIG))
    ready = root / "ready.json"
    env = {**os.environ, "SLUICE_ADMIN_TOKEN": TOKEN}
    with open(root / "daemon.log", "wb") as log:
        proc = subprocess.Popen(
            [SLUICE, "serve", str(root / "config"), "--port", "0", "--data-dir", str(root / "data"),
             "--ready-file", str(ready), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start: {(root / 'daemon.log').read_text()}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"


async def fill(session: aiohttp.ClientSession, url: str, n: int) -> None:
    step = 10_000
    for low in range(0, n, step):
        batch = [{"_id": f"e{i}", "name": f"entity {i}", "value": i * 1.5, "tags": ["a", "b"],
                  "nested": {"x": i, "y": str(i)}} for i in range(low, min(low + step, n))]
        async with session.post(f"{url}/api/receivers/inbox/entities", data=orjson.dumps(batch),
                                headers={**HEADERS, "Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()


async def stream(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/api/publishers/pub/entities", headers=HEADERS) as r:
        assert r.status == 200
        return len(orjson.loads(await r.read()))


async def probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        async with session.get(f"{url}/api/pipes", headers=HEADERS) as r:
            await r.read()
            assert r.status == 200
        out.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.02)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def measure(url: str, n: int) -> None:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=50)) as s:
        t = time.perf_counter()
        await fill(s, url, n)
        print(f"filled {n} entities by JSON push in {time.perf_counter() - t:.2f} s")
        await stream(s, url)  # warm-up
        t = time.perf_counter()
        got = await stream(s, url)
        one = got / (time.perf_counter() - t)
        assert got == n
        stop, lat = asyncio.Event(), []
        prober = asyncio.create_task(probe(s, url, stop, lat))
        t = time.perf_counter()
        counts = await asyncio.gather(*(stream(s, url) for _ in range(20)))
        many = sum(counts) / (time.perf_counter() - t)
        stop.set()
        await prober
        idle: list[float] = []
        for _ in range(50):
            q = time.perf_counter()
            async with s.get(f"{url}/api/pipes", headers=HEADERS) as r:
                await r.read()
            idle.append((time.perf_counter() - q) * 1000)
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"| publisher, 1 client | {one:,.0f} entities/s | target {TARGET_ONE:,} | ratio {one / TARGET_ONE:.2f} |")
    print(f"| publisher, 20 clients (aggregate) | {many:,.0f} entities/s | target {TARGET_MANY:,} | "
          f"ratio {many / TARGET_MANY:.2f} |")
    print(f"| GET /api/pipes under load, p50 | {p50:.1f} ms | | ({len(lat)} requests) |")
    print(f"| GET /api/pipes under load, p99 | {p99:.1f} ms | target <= {TARGET_P99_MS:.0f} ms | "
          f"ratio {p99 / TARGET_P99_MS:.2f} |")
    print(f"| GET /api/pipes idle, p50 / p99 | {pct(idle, 50):.1f} / {pct(idle, 99):.1f} ms | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        proc, url = start(Path(tmp))
        try:
            asyncio.run(measure(url, args.entities))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
