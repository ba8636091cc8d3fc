"""Benchmarks of the files source (issue 11), each printing its figures and the ratio to its target:

(c) 2,000 objects of 1 KB in moto's S3 server (its own process, ``moto_server``), downloaded by
    the ``files`` source with concurrency 32, against the same with concurrency 1
    (target: ratio >= 8).
(e) a re-run of the ``files`` pipe over 10,000 listed, unchanged files of a ``system:local``
    directory: seconds (target < 2 s) and operations sent to the system (downloads; target 0,
    counted by the ``sluice_system_requests`` metric).

Run: ``python bench/files_download.py [--only c|e]``. (a), (b) and (d) of the issue are in
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
def moto() -> Iterator[tuple[str, Any]]:
    """moto's S3 server in its own process (``moto_server``) with an empty bucket ``bench``:
    (its URL, a boto3 client)."""
    import boto3

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        yield url, client
    finally:
        server.terminate()
        server.wait(15)


async def bench_c(tmp: Path) -> None:
    with moto() as (url, client):
        body = "id,value\n{}," + "x" * 1000 + "\n"
        for i in range(2000):
            client.put_object(Bucket="bench", Key=f"o{i:05}.csv", Body=body.format(i).encode())
        system = {"type": "system:s3", "bucket": "bench", "endpoint": url, "access_key_id": "test",
                  "secret_access_key": "$SECRET(BENCH_S3_SECRET)"}
        os.environ["BENCH_S3_SECRET"] = "test"
        one, _, (_, _, n1) = await timed_ingest(tmp / "c1", system, 1)
        many, _, (_, _, n32) = await timed_ingest(tmp / "c32", system, 32)
        assert n1 == n32 == 2000
        print(f"(c) 2,000 x 1 KB objects from moto S3: concurrency 1 {one:.2f} s, concurrency 32 {many:.2f} s; "
              f"speed-up {one / many:.2f} x, ratio to target (>= 8) {one / many / 8:.2f}")


async def bench_e(tmp: Path) -> None:
    drop = tmp / "e-drop"
    drop.mkdir()
    for i in range(10_000):
        (drop / f"f{i:05}.csv").write_text(f"id,value\n{i},v{i}\n")
    _, again, (r, ops, n) = await timed_ingest(tmp / "e", {"type": "system:local", "root": str(drop)}, 8)
    assert n == 10_000
    print(f"(e) re-run over 10,000 unchanged listed files: {again:.2f} s (target < 2 s, ratio {again / 2:.2f}), "
          f"{ops:.0f} operations on the system (target 0), units {r.units}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["c", "e"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "e"):
            asyncio.run(bench_e(Path(tmp)))
        if args.only in (None, "c"):
            asyncio.run(bench_c(Path(tmp)))


if __name__ == "__main__":
    main()
