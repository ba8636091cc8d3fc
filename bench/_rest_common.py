"""Shared helpers of the REST benchmarks: the test API in its own process, config writing, the
bare aiohttp client the latency benches compare Sluice with, and their summary line."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent


def start_api(items: int, latency: float = 0.0, *, lean: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start tests/servers/faulty_api.py (or with ``lean`` the minimal bench/_fast_http.py) in a
    separate process (so its memory and CPU are not counted as the client's); returns the process
    and its base URL."""
    module = "bench._fast_http" if lean else "tests.servers.faulty_api"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--items", str(items), "--latency", str(latency)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the test API did not start")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)


def write(config_dir: Path, objects: list[dict]) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "bench.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))
    return config_dir


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def bare(url: str, calls: Iterator[tuple[str, str, bytes | None]], concurrency: int,
               status: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) a bare aiohttp client needs for ``calls``
    ((method, path, JSON body or None) each): one session, ``concurrency`` workers, each body read
    and parsed, nothing recorded; every answer must have ``status``."""
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for method, path, body in calls:
            async with session.request(method, f"{url}{path}", data=body, headers=headers) as resp:
                orjson.loads(await resp.read())
                assert resp.status == status, resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - wall, time.process_time() - cpu


def latency_summary(items: int, latency: float, concurrency: int, target: float,
                    sluice: tuple[float, float], baseline: tuple[float, float], unit: str) -> str:
    """The figures of a latency bench: wall time against the ideal ``items x latency /
    concurrency``, the bare client's, CPU microseconds per ``unit`` of both, the load average."""
    ideal = items * latency / concurrency
    ratio = sluice[0] / ideal
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"sluice {sluice[0]:.2f} s wall, bare aiohttp {baseline[0]:.2f} s, ideal {ideal:.2f} s; ratio {ratio:.2f} "
            f"(target <= {target}; {'met' if ratio <= target else 'NOT met'}), bare ratio {baseline[0] / ideal:.2f}; "
            f"CPU {sluice[1] / items * 1e6:.0f} us/{unit} (bare {baseline[1] / items * 1e6:.0f}); load average {load}")
