"""Throughput and memory benchmarks of the files source (issue 11), each printing its figures and
the ratio to its target:

(a) 200 CSV files x 5,000 rows on the asyncssh SFTP server of the tests (its own process,
    ``python -m tests.servers.file_drop sftp``), listed and ingested into a dataset by the
    ``file_listing`` and ``files`` pipes: rows per second of the ``files`` run, against a bare
    loop over the same files (asyncssh download of each file + ``csv.DictReader`` over it, with
    the same number of files at once). Target: ratio >= 0.5. Also printed: the **store floor**
    (the same rows, parsed beforehand, written straight into a dataset: the highest ratio any
    files run could reach) and a bare loop that also keeps its rows in one SQLite table (what a
    cron script that persists does), with the files run's ratio to it.
(b) the same 200 files from moto's S3 server (the tests', in its own process), against a bare
    obstore loop (``get_async`` + ``csv.DictReader``). Target: ratio >= 0.5.
(d) one 1 GB NDJSON file (1 KB records) in a ``system:local`` directory, ingested by ``sluice run``
    in a child process: its peak RSS (``wait4``). Target: < 200 MB. Then the same for a new
    version of the file with a tenth of its records gone (read again whole, a tenth deleted by the
    per-file deletion tracking): memory must not depend on the file there either.

Each figure is printed with the load average (``os.getloadavg``) and the CPU seconds of this
process (which runs Sluice for (a) and (b)); the servers' CPU is their own. Run:
``python bench/files_throughput.py [--only a|b|d] [--files N] [--rows N] [--gb X]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.files_download import moto, pipes  # noqa: E402
from runtime import Runtime  # noqa: E402
from tests.servers.real import free_port  # noqa: E402

CONCURRENCY = 4  # the files source's default


def csv_body(f: int, rows: int) -> bytes:
    lines = "".join(f"{f}-{r},c{r % 997},{r * 1.25:.2f},{'open' if r % 3 else 'closed'},2026-12-0{1 + r % 9}\n"
                    for r in range(rows))
    return ("id,customer,amount,status,day\n" + lines).encode()


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse(data: bytes) -> int:
    return sum(1 for _ in csv.DictReader(io.StringIO(data.decode())))


class Persist:
    """What a cron script that keeps its rows would add to the bare loop: each file's rows as
    ``INSERT OR REPLACE INTO rows(id, body)`` (the row as JSON) into one SQLite table, one
    transaction per file (WAL, ``synchronous=NORMAL``: Sluice's durability). No versions, no
    change detection, no deletion tracking, no checkpoint."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE rows(id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        self.lock = threading.Lock()

    def __call__(self, data: bytes) -> int:
        rows = [(r["id"], orjson.dumps(r)) for r in csv.DictReader(io.StringIO(data.decode()))]
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO rows(id, body) VALUES (?, ?)", rows)
            self.db.execute("COMMIT")
        return len(rows)


async def bare(paths: list[str], fetch: Callable[[str], Awaitable[bytes]],
               handle: Callable[[bytes], int] = parse) -> float:
    """Seconds to fetch and ``handle`` (parse, by default) every path, ``CONCURRENCY`` at once
    (the bare baseline)."""
    queue = list(paths)
    rows = 0

    async def worker() -> None:
        nonlocal rows
        while queue:
            data = await fetch(queue.pop())
            rows += await asyncio.to_thread(handle, data)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0


async def sluice(root: Path, system: dict[str, Any], path: str) -> tuple[float, float, int]:
    """(listing seconds, files-run seconds, rows in the dataset) of the two-step pipes."""
    cfg = root / "config"
    cfg.mkdir(parents=True)
    config = pipes(system, CONCURRENCY)
    config[1]["source"]["path"] = path
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(config))
    async with Runtime(cfg, data_dir=root / "data") as rt:
        t0 = time.perf_counter()
        r = await rt.run_pipe("listing")
        listing = time.perf_counter() - t0
        assert r.status == "completed", r.error
        t0 = time.perf_counter()
        r = await rt.run_pipe("ingest")
        ingest = time.perf_counter() - t0
        assert r.status == "completed", r.error
        info = await rt.store.dataset_info("ingest")
        assert info is not None
        return listing, ingest, info.ids


async def store_floor(root: Path, files: int, rows: int) -> float:
    """Seconds to write the same rows, parsed beforehand (not timed), straight into a dataset of
    a SQLite store in batches of 1,000 (``write_batch``: hash, compare, log and latest-version
    rows, commit): no pipe, no download, no parse. No files run can be faster."""
    from runtime.store import SqliteStore

    parsed: list[dict[str, Any]] = []
    for f in range(files):
        parsed.extend({**r, "_id": r["id"]} for r in csv.DictReader(io.StringIO(csv_body(f, rows).decode())))
    store = SqliteStore(root / "floor.db")
    await store.open()
    try:
        t0 = time.perf_counter()
        for start in range(0, len(parsed), 1000):
            await store.write_batch("floor", parsed[start:start + 1000], pipe="floor", checkpoint=None)
        return time.perf_counter() - t0
    finally:
        await store.close()


def report(name: str, rows: int, listing: float, ingest: float, baseline: float, cpu: float, floor: float,
           persisting: float) -> None:
    ours, theirs = rows / ingest, rows / baseline
    print(f"({name}) {rows:,} rows: files run {ingest:.2f} s = {ours:,.0f} rows/s (listing {listing:.2f} s), "
          f"bare loop {baseline:.2f} s = {theirs:,.0f} rows/s; ratio {ours / theirs:.2f} (target >= 0.5, "
          f"ratio to target {ours / theirs / 0.5:.2f}); CPU of this process {cpu:.1f} s; {load()}")
    print(f"({name}) store floor: the parsed rows written straight into a dataset take {floor:.2f} s = "
          f"{rows / floor:,.0f} rows/s, so no files run can reach a ratio above {baseline / floor:.2f}; "
          f"the files run takes {ingest / floor:.2f} x the floor")
    print(f"({name}) bare loop that also keeps its rows (one SQLite table, INSERT OR REPLACE): {persisting:.2f} s "
          f"= {rows / persisting:,.0f} rows/s; ratio of the files run to it {persisting / ingest:.2f}")


async def bench_a(tmp: Path, files: int, rows: int) -> None:
    import asyncssh

    work = tmp / "a-sftp"
    (work / "root" / "bench").mkdir(parents=True)
    for f in range(files):
        (work / "root" / "bench" / f"f{f:03}.csv").write_bytes(csv_body(f, rows))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.servers.file_drop", "sftp", "--port", str(port),
                               "--dir", str(work)], cwd=ROOT)
    try:
        for _ in range(300):
            if (work / "secrets.json").exists():
                break
            time.sleep(0.05)
        key = json.loads((work / "secrets.json").read_text())["drop-sftp-key"]
        os.environ["BENCH_SFTP_KEY"] = key
        system = {"type": "system:sftp", "host": "127.0.0.1", "port": port, "username": "sluice",
                  "private_key": "$SECRET(BENCH_SFTP_KEY)", "known_hosts": str(work / "known_hosts")}
        cpu0 = time.process_time()
        listing, ingest, n = await sluice(tmp / "a", system, "bench")
        cpu = time.process_time() - cpu0
        assert n == files * rows, n
        login = {"username": "sluice", "client_keys": [asyncssh.import_private_key(key)],
                 "known_hosts": str(work / "known_hosts")}
        async with asyncssh.connect("127.0.0.1", port, **login) as conn, conn.start_sftp_client() as sftp:
            async def fetch(path: str) -> bytes:
                async with sftp.open(path, "rb") as fh:
                    return bytes(await fh.read())

            paths = [f"bench/f{f:03}.csv" for f in range(files)]
            baseline = await bare(paths, fetch)
            persisting = await bare(paths, fetch, Persist(tmp / "a-persist.db"))
        report("a", n, listing, ingest, baseline, cpu, await store_floor(tmp / "a", files, rows), persisting)
    finally:
        server.terminate()
        server.wait(15)


async def bench_b(tmp: Path, files: int, rows: int) -> None:
    import obstore
    from obstore.store import S3Store

    with moto() as (url, client, _):
        for f in range(files):
            client.put_object(Bucket="bench", Key=f"bench/f{f:03}.csv", Body=csv_body(f, rows))
        cpu0 = time.process_time()
        listing, ingest, n = await sluice(tmp / "b", {**S3_SYSTEM, "endpoint": url}, "bench")
        cpu = time.process_time() - cpu0
        assert n == files * rows, n
        store = S3Store("bench", endpoint=url, region="us-east-1", access_key_id="test", secret_access_key="test",
                        client_options={"allow_http": True}, virtual_hosted_style_request=False)

        async def fetch(path: str) -> bytes:
            return bytes(await (await obstore.get_async(store, path)).bytes_async())

        paths = [f"bench/f{f:03}.csv" for f in range(files)]
        baseline = await bare(paths, fetch)
        persisting = await bare(paths, fetch, Persist(tmp / "b-persist.db"))
        report("b", n, listing, ingest, baseline, cpu, await store_floor(tmp / "b", files, rows), persisting)


S3_SYSTEM = {"type": "system:s3", "bucket": "bench", "access_key_id": "test",
             "secret_access_key": "$SECRET(BENCH_S3_SECRET)"}
os.environ.setdefault("BENCH_S3_SECRET", "test")


def bench_d(tmp: Path, gb: float) -> None:
    drop = tmp / "d-drop"
    drop.mkdir()
    cfg = tmp / "d" / "config"
    cfg.mkdir(parents=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes({"type": "system:local", "root": str(drop)}, 1)))
    written, n = write_ndjson(drop / "big.ndjson", int(gb * 1e9), "v1")
    seconds, peak = sluice_run_rss(tmp, cfg)
    print(f"(d) one {written / 1e9:.2f} GB NDJSON file, {n:,} records: sluice run {seconds:.1f} s "
          f"({n / seconds:,.0f} records/s), peak RSS {peak:.0f} MB (target < 200 MB, ratio {peak / 200:.2f}); {load()}")
    # a new version of the file, one record in ten gone: every record read again, a tenth deleted
    written, n = write_ndjson(drop / "big.ndjson", int(gb * 1e9), "v2", skip_every=10)
    seconds, peak = sluice_run_rss(tmp, cfg)
    print(f"(d) a new version of it ({n:,} records, a tenth of the earlier ones gone): sluice run {seconds:.1f} s, "
          f"peak RSS {peak:.0f} MB (target < 200 MB, ratio {peak / 200:.2f}); {load()}")


def write_ndjson(path: Path, size: int, tag: str, skip_every: int = 0) -> tuple[int, int]:
    """Records of 1 KB until the file holds ``size`` bytes (``skip_every``: leave out every such
    record); (bytes, records written)."""
    pad = "x" * 960
    written = kept = i = 0
    with open(path, "w") as out:
        while written < size:
            i += 1
            if skip_every and i % skip_every == 0:
                continue
            line = f'{{"id": "r{i:09}", "tag": "{tag}", "pad": "{pad}"}}\n'
            out.write(line)
            written += len(line)
            kept += 1
    os.utime(path, (time.time() + 10, time.time() + 10)) if skip_every else None  # a new mtime: a new version
    return written, kept


def sluice_run_rss(tmp: Path, cfg: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``sluice run`` over ``cfg`` in a child process (``wait4``)."""
    sluice_bin = str(Path(sys.executable).parent / "sluice")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sluice_bin, "run", str(cfg), "--data-dir", str(tmp / "d" / "data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "SLUICE_TMPDIR": str(tmp)})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["a", "b", "d"])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--gb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("SLUICE_TMPDIR")) as tmp:
        if args.only in (None, "a"):
            asyncio.run(bench_a(Path(tmp), args.files, args.rows))
        if args.only in (None, "b"):
            asyncio.run(bench_b(Path(tmp), args.files, args.rows))
        if args.only in (None, "d"):
            bench_d(Path(tmp), args.gb)
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
