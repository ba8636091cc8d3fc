"""Benchmarks of the files source (issue 11), each printing its figures and the ratio to its target:

(c) 2,000 objects of 1 KB in moto's S3 server (its own process, ``moto_server``), downloaded by
    the ``files`` source with concurrency 32, against the same with concurrency 1
    (target: ratio >= 8).
(e) a re-run of the ``files`` pipe over 10,000 listed, unchanged files of a ``system:local``
    directory: seconds (target < 2 s) and operations sent to the system (downloads; target 0,
    counted by the ``sluice_system_requests`` metric).

(f) the listing pipe alone (``sluice run --pipe listing`` in a child process) over 100,000 and
    300,000 files of a ``system:local`` directory: its peak RSS (``wait4``). The issue asks that a
    listing of 100,000 objects runs in memory bounded by the batch size, so the figure must not
    grow with the number of files: target ratio of the 300,000 figure to the 100,000 one <= 1.2
    (memory growing with the files would give 3). The object stores list through the same code;
    putting 100,000 objects into moto would take minutes, so a local directory stands in.

Run: ``python bench/files_download.py [--only c|e|f]``. (a), (b) and (d) of the issue are in
``bench/files_throughput.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import Runtime
from runtime.metrics import REGISTRY
from tests.servers.real import free_port

ROOT = Path(__file__).resolve().parents[1]


def requests(system: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "sluice_system_requests_total" and sample.labels.get("system") == system:
                total += sample.value
    return total


def pipes(system: dict[str, Any], concurrency: int) -> list[dict[str, Any]]:
    return [{"_id": "drop", **system, "concurrency": concurrency},
            {"_id": "listing", "type": "pipe", "source": {"type": "file_listing", "system": "drop"}},
            {"_id": "ingest", "type": "pipe",
             "source": {"type": "files", "system": "drop", "listing_dataset": "listing", "primary_key": "id",
                        "concurrency": concurrency}}]


async def timed_ingest(root: Path, system: dict[str, Any], concurrency: int) -> tuple[float, float, Any]:
    cfg = root / "config"
    cfg.mkdir(parents=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes(system, concurrency)))
    async with Runtime(cfg, data_dir=root / "data") as rt:
        r = await rt.run_pipe("listing")
        assert r.status == "completed", r.error
        t0 = time.perf_counter()
        r = await rt.run_pipe("ingest")
        first = time.perf_counter() - t0
        assert r.status == "completed", r.error
        before = requests("drop")
        t0 = time.perf_counter()
        r = await rt.run_pipe("ingest")
        again = time.perf_counter() - t0
        return first, again, (r, requests("drop") - before, len(await rt.entities("ingest", limit=100_000)))


@contextmanager
def moto(latency_s: float = 0.0) -> Iterator[tuple[str, Any, int]]:
    """moto's S3 server of the tests in its own process (``tests.servers.file_drop s3``, each
    request waiting ``latency_s`` first) with an empty bucket ``bench``: (its URL, a boto3 client,
    its process id)."""
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.servers.file_drop", "s3", "--port", str(port),
                               "--latency-s", str(latency_s)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                              aws_secret_access_key="test")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        yield url, client, server.pid
    finally:
        server.terminate()
        server.wait(15)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_c(tmp: Path, objects: int, latency_s: float) -> None:
    with moto(latency_s) as (url, client, pid):
        body = "id,value\n{}," + "x" * 1000 + "\n"
        for i in range(objects):
            client.put_object(Bucket="bench", Key=f"o{i:05}.csv", Body=body.format(i).encode())
        system = {"type": "system:s3", "bucket": "bench", "endpoint": url, "access_key_id": "test",
                  "secret_access_key": "$SECRET(BENCH_S3_SECRET)"}
        os.environ["BENCH_S3_SECRET"] = "test"
        times = {}
        for concurrency in (1, 32):
            cpu, server_cpu = time.process_time(), cpu_seconds(pid)
            times[concurrency], _, (_, _, n) = await timed_ingest(tmp / f"c{concurrency}", system, concurrency)
            assert n == objects, n
            print(f"(c) concurrency {concurrency}: {times[concurrency]:.2f} s, CPU of this process (Sluice) "
                  f"{time.process_time() - cpu:.1f} s, of the S3 server {cpu_seconds(pid) - server_cpu:.1f} s")
        speedup = times[1] / times[32]
        print(f"(c) {objects:,} x 1 KB objects from moto S3 (latency {latency_s * 1000:.0f} ms per request): "
              f"speed-up of concurrency 32 over 1 {speedup:.2f} x, ratio to target (>= 8) {speedup / 8:.2f}; "
              f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def bench_e(tmp: Path) -> None:
    drop = tmp / "e-drop"
    drop.mkdir()
    for i in range(10_000):
        (drop / f"f{i:05}.csv").write_text(f"id,value\n{i},v{i}\n")
    _, again, (r, ops, n) = await timed_ingest(tmp / "e", {"type": "system:local", "root": str(drop)}, 8)
    assert n == 10_000
    print(f"(e) re-run over 10,000 unchanged listed files: {again:.2f} s (target < 2 s, ratio {again / 2:.2f}), "
          f"{ops:.0f} operations on the system (target 0), units {r.units}")


def listing_rss(tmp: Path, files: int) -> float:
    """Peak RSS in MB of ``sluice run --pipe listing`` over ``files`` empty-bodied CSV files."""
    drop = tmp / f"f-drop-{files}"
    drop.mkdir()
    for i in range(files):
        (drop / f"f{i:06}.csv").write_bytes(b"id\n1\n")
    cfg = tmp / f"f-{files}" / "config"
    cfg.mkdir(parents=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes({"type": "system:local", "root": str(drop)}, 1)))
    sluice = str(Path(sys.executable).parent / "sluice")
    t0 = time.perf_counter()
    data = tmp / f"f-{files}" / "data"
    proc = subprocess.Popen([sluice, "run", str(cfg), "--pipe", "listing", "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    print(f"(f) listing {files:,} files: {time.perf_counter() - t0:.1f} s, peak RSS {peak:.0f} MB")
    return peak


def bench_f(tmp: Path) -> None:
    listing_rss(tmp, 1_000)  # for scale: the process without a large listing (SQLite's caches fill later)
    small, large = listing_rss(tmp, 100_000), listing_rss(tmp, 300_000)
    print(f"(f) peak RSS of the listing: 300,000 files / 100,000 files = {large / small:.2f} (target <= 1.2, "
          f"ratio to target {large / small / 1.2:.2f}); load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["c", "e", "f"])
    parser.add_argument("--objects", type=int, default=2000, help="(c): objects")
    parser.add_argument("--latency-s", type=float, default=0.02, help="(c): seconds the S3 server waits per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "e"):
            asyncio.run(bench_e(Path(tmp)))
        if args.only in (None, "c"):
            asyncio.run(bench_c(Path(tmp), args.objects, args.latency_s))
        if args.only in (None, "f"):
            bench_f(Path(tmp))


if __name__ == "__main__":
    main()
