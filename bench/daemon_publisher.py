"""Publisher throughput and API latency of a real ``sluice serve`` process.

Starts the daemon on 127.0.0.1 with a receiver pipe and a JSON pull publisher over its dataset,
fills the dataset by JSON push, then measures:

1. entities/s streamed by ``GET /api/publishers/pub/entities`` to one client (whole dataset);
2. entities/s (aggregate) streamed to 20 concurrent clients;
3. latency of ``GET /api/pipes`` (p50, p99) while the 20 clients stream;
4. the same with 20 clients *paging* (``?since=&limit=5000``, since = the last ``_updated``
   received, as a Sesam or Sluice consumer does): aggregate entities/s and ``GET /api/pipes``
   latency meanwhile.

Clients parse every response body (orjson), so client cost is included. Run::

    .venv/bin/python bench/daemon_publisher.py [--entities 100000] [--only paging]

Targets (chosen for one small machine, 2 cores): one client >= 50 000 entities/s; 20 clients
>= 50 000 entities/s aggregate (streaming); p99 of GET /api/pipes under either load <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

SLUICE = str(Path(sys.executable).parent / "sluice")
TOKEN = "bench-admin"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TARGET_ONE, TARGET_MANY, TARGET_P99_MS = 50_000, 50_000, 250.0
CLIENTS = 20
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


async def page_all(session: aiohttp.ClientSession, url: str, limit: int) -> int:
    """Page through the publisher like a consumer; returns the entities received."""
    since, got = None, 0
    while True:
        params = {"limit": str(limit), **({"since": str(since)} if since is not None else {})}
        async with session.get(f"{url}/api/publishers/pub/entities", params=params, headers=HEADERS) as r:
            assert r.status == 200
            page = orjson.loads(await r.read())
        if not page:
            return got
        got += len(page)
        since = page[-1]["_updated"]


async def probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event | None, out: list[float],
                stopped: Any = None) -> None:
    """GET /api/pipes every 20 ms until ``stop`` is set (or ``stopped()`` is true)."""
    while not (stop.is_set() if stop is not None else stopped()):
        t = time.perf_counter()
        async with session.get(f"{url}/api/pipes", headers=HEADERS) as r:
            await r.read()
            assert r.status == 200
        out.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.02)


def _probe_main(url: str, stop: Any, out: Any) -> None:
    """Body of the probe process: GET /api/pipes every 20 ms until ``stop``; sends the latencies."""
    async def go() -> list[float]:
        lat: list[float] = []
        async with aiohttp.ClientSession() as s:
            await probe(s, url, None, lat, stop.is_set)
        return lat

    out.send(asyncio.run(go()))


class Prober:
    """``GET /api/pipes`` latencies measured by a process of its own: what another client of the
    API sees, not delayed by this process's load clients parsing their pages on the same loop."""

    def __init__(self, url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_probe_main, args=(url, self.stop, send), daemon=True)
        self.proc.start()

    def finish(self) -> list[float]:
        self.stop.set()
        lat: list[float] = self.recv.recv()
        self.proc.join()
        return lat


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def under_load(session: aiohttp.ClientSession, url: str, load: Any) -> tuple[list[int], float, list[float],
                                                                                 list[float]]:
    """Run ``load`` (awaitables) while probing GET /api/pipes from this loop and from a process of
    its own: (counts, seconds, latencies ms seen here, latencies ms seen by the other process)."""
    stop, lat = asyncio.Event(), []
    other = Prober(url)
    prober = asyncio.create_task(probe(session, url, stop, lat))
    t = time.perf_counter()
    counts = await asyncio.gather(*load)
    seconds = time.perf_counter() - t
    stop.set()
    await prober
    return counts, seconds, lat, await asyncio.to_thread(other.finish)


def latency_rows(what: str, lat: list[float], alone: list[float]) -> None:
    for where, values in (("probe sharing the clients' loop", lat), ("probe in its own process", alone)):
        p50, p99 = pct(values, 50), pct(values, 99)
        print(f"| GET /api/pipes under {what}, {where}, p50 / p99 | {p50:.1f} / {p99:.1f} ms | "
              f"target p99 <= {TARGET_P99_MS:.0f} ms | ratio {p99 / TARGET_P99_MS:.2f} ({len(values)} requests) |")


async def streaming(s: aiohttp.ClientSession, url: str, n: int) -> None:
    await stream(s, url)  # warm-up
    t = time.perf_counter()
    got = await stream(s, url)
    one = got / (time.perf_counter() - t)
    assert got == n
    counts, seconds, lat, alone = await under_load(s, url, [stream(s, url) for _ in range(CLIENTS)])
    many = sum(counts) / seconds
    print(f"| publisher, 1 client | {one:,.0f} entities/s | target {TARGET_ONE:,} | ratio {one / TARGET_ONE:.2f} |")
    print(f"| publisher, {CLIENTS} clients (aggregate) | {many:,.0f} entities/s | target {TARGET_MANY:,} | "
          f"ratio {many / TARGET_MANY:.2f} |")
    latency_rows(f"{CLIENTS} streams", lat, alone)


async def paging(s: aiohttp.ClientSession, url: str, n: int, limit: int) -> None:
    counts, seconds, lat, alone = await under_load(s, url, [page_all(s, url, limit) for _ in range(CLIENTS)])
    assert counts == [n] * CLIENTS
    print(f"| publisher, {CLIENTS} clients paging limit={limit} (aggregate) | {sum(counts) / seconds:,.0f} "
          f"entities/s | | |")
    latency_rows(f"{CLIENTS} paging clients", lat, alone)


async def measure(url: str, n: int, only: str | None, limit: int) -> None:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=50)) as s:
        t = time.perf_counter()
        await fill(s, url, n)
        print(f"filled {n} entities by JSON push in {time.perf_counter() - t:.2f} s")
        if only in (None, "streaming"):
            await streaming(s, url, n)
        if only in (None, "paging"):
            await paging(s, url, n, limit)
        idle: list[float] = []
        for _ in range(50):
            q = time.perf_counter()
            async with s.get(f"{url}/api/pipes", headers=HEADERS) as r:
                await r.read()
            idle.append((time.perf_counter() - q) * 1000)
    print(f"| GET /api/pipes idle, p50 / p99 | {pct(idle, 50):.1f} / {pct(idle, 99):.1f} ms | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--only", choices=["streaming", "paging"], help="measure one load only")
    parser.add_argument("--page-limit", type=int, default=5000, help="limit of each paging request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        proc, url = start(Path(tmp))
        try:
            asyncio.run(measure(url, args.entities, args.only, args.page_limit))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
