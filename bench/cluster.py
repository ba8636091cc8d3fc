"""Cluster benchmarks (issue 13 (b), (c), (d)) on a temporary PostgreSQL (fsync off).

(b) 1,000 I/O-bound units (the server adds 200 ms per request) on 1 ``sluice serve`` and on 3
    sharing the store: seconds from the start request until every unit is done, and the speed-up
    (target >= 2.5). Each daemon's HTTP client allows ``--per-daemon`` requests at once (the
    system's ``concurrency``: a per-process limit); the pipe's ``max_concurrent_units`` (held across
    the cluster) is 3 x that, so one daemon is bound by its client and three share the units.
(c) Claim and finish no-op units with 3 members (3 processes, each a cluster member's store,
    claiming in batches and committing each batch's ``done`` progress fenced, as a run does; no
    I/O): units per second of the whole (target >= 2,000/s).
(d) A dead daemon's units resumed by another: 2 daemons, the server adds 1 s per request, SIGKILL
    one while it holds units; seconds from the kill until every unit it held is claimed again by
    the other (target <= 2 x the lease), and until they are done.

Run: .venv/bin/python bench/cluster.py [--units 1000] [--per-daemon 20] [--noop 20000] [--lease 2]
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
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._rest_common import start_api, stop, write
from runtime.cluster.member import new_membership
from runtime.store import Checkpoint, PostgresStore
from runtime.store.protocol import UnitProgress
from tests.servers.postgres import PostgresServer

SLUICE = str(Path(sys.executable).parent / "sluice")
TOKEN = "bench-admin"


def config(url: str, units: int, per_daemon: int) -> list[dict]:
    return [{"_id": "api", "type": "system:rest", "base_url": url, "concurrency": per_daemon},
            {"_id": "units", "type": "pipe", "pump": {"mode": "manual"}, "source": {
                "type": "rest", "system": "api", "url": "/items/{{ unit.value }}", "id_expression": "{{ id }}",
                "work_units": {"values": [f"i{n:07}" for n in range(units)],
                               "max_concurrent_units": 3 * per_daemon}}}]


def serve(cfg: Path, store: str, work: Path, lease: float) -> tuple[subprocess.Popen[bytes], str]:
    """One ``sluice serve`` member; returns it and its URL once it listens."""
    work.mkdir(parents=True)
    ready = work / "ready.json"
    env = {**os.environ, "SLUICE_ADMIN_TOKEN": TOKEN, "SLUICE_CLUSTER_LEASE_S": str(lease)}
    with open(work / "log", "wb") as log:
        proc = subprocess.Popen([SLUICE, "serve", str(cfg), "--store", store, "--port", "0", "--data-dir",
                                 str(work / "data"), "--ready-file", str(ready), "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError((work / "log").read_text())
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"


def halt(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(60)


async def start_run(url: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/api/pipes/units/pump", json={"operation": "start"},
                                                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200, await r.text()


async def until_done(store: str, units: int) -> None:
    conn = await asyncpg.connect(store)
    try:
        while await conn.fetchval("SELECT count(*) FROM work_units WHERE status = 'done'") < units:
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def trial_b(server: PostgresServer, api: str, members: int, units: int, per_daemon: int, tmp: Path,
                  n: int) -> float:
    store = await server.create_database(f"b{members}_{n}")
    cfg = write(tmp / f"b{members}_{n}" / "config", config(api, units, per_daemon))
    procs = []
    try:
        urls = []
        for i in range(members):
            proc, url = serve(cfg, store, tmp / f"b{members}_{n}" / f"m{i}", 30.0)
            procs.append(proc)
            urls.append(url)
        await asyncio.sleep(1.0)  # every member has beaten once and listens for notifications
        started = time.perf_counter()
        await start_run(urls[0])
        await until_done(store, units)
        return time.perf_counter() - started
    finally:
        halt(procs)


def noop_member(store: str, lease: float, claim: int, out: Any, go: Any) -> None:
    """One member of (c) in its own process: registers, says it is ready, waits for ``go``, then
    claims and finishes units until none is left; puts how many it finished."""

    async def run() -> int:
        s = PostgresStore(store)
        await s.open()
        s.cluster = new_membership(lease)
        s.cluster.shared, s.cluster.limits = {"noop"}, {"noop": 3 * claim}
        await s.cluster_sessions()
        await s.cluster_heartbeat()
        out.put("ready")
        await asyncio.to_thread(go.wait)
        done = 0
        try:
            async with s.pipe_lock("noop"):
                while batch := await s.claim_units("noop", "bench", limit=claim, lease_s=lease):
                    progress = {u.key: UnitProgress("done") for u in batch}
                    await s.save_checkpoint("noop", Checkpoint(None, None, progress))
                    done += len(batch)
        finally:
            await s.close()
        return done

    out.put(asyncio.run(run()))


async def bench_c(server: PostgresServer, units: int, claim: int) -> tuple[float, list[int]]:
    store = await server.create_database("c")
    s = PostgresStore(store)
    await s.open()
    await s.plan_units("noop", [(f"u{i:07}", {}, True) for i in range(units)])
    await s.close()
    ctx = multiprocessing.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=noop_member, args=(store, 30.0, claim, out, go)) for _ in range(3)]
    for p in procs:
        p.start()
    assert [out.get() for _ in procs] == ["ready"] * 3  # imports and connections not timed
    started = time.perf_counter()
    go.set()
    shares = [out.get() for _ in procs]
    seconds = time.perf_counter() - started
    for p in procs:
        p.join()
    assert sum(shares) == units, shares
    return seconds, shares


async def bench_d(server: PostgresServer, tmp: Path, lease: float) -> tuple[float, float]:
    proc_api, api = start_api(40, 1.0, lean=True)
    store = await server.create_database("d")
    cfg = write(tmp / "d" / "config", config(api, 40, 4))
    procs = []
    try:
        a, url = serve(cfg, store, tmp / "d" / "m0", lease)
        b, _ = serve(cfg, store, tmp / "d" / "m1", lease)
        procs = [a, b]
        await asyncio.sleep(1.0)
        await start_run(url)
        conn = await asyncpg.connect(store)
        try:
            victim = None
            while victim is None:  # b, the helper, holds units
                victim = await conn.fetchval("SELECT member FROM cluster_members m WHERE pid = $1 AND EXISTS "
                                             "(SELECT 1 FROM work_units WHERE lease_owner = m.member "
                                             "AND status = 'running')", b.pid)
                await asyncio.sleep(0.02)
            held = [r[0] for r in await conn.fetch("SELECT key FROM work_units WHERE lease_owner = $1 "
                                                   "AND status = 'running'", victim)]
            b.send_signal(signal.SIGKILL)
            b.wait()
            killed = time.perf_counter()
            while await conn.fetchval("SELECT count(*) FROM work_units WHERE key = ANY($1) AND (status = 'done' "
                                      "OR lease_owner <> $2)", held, victim) < len(held):
                await asyncio.sleep(0.02)
            resumed = time.perf_counter() - killed
            while await conn.fetchval("SELECT count(*) FROM work_units WHERE key = ANY($1) AND status = 'done'",
                                      held) < len(held):
                await asyncio.sleep(0.02)
            return resumed, time.perf_counter() - killed
        finally:
            await conn.close()
    finally:
        halt(procs)
        stop(proc_api)


async def main(args: argparse.Namespace) -> None:
    server = PostgresServer.start()
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            print(f"load average before: {os.getloadavg()[0]:.2f}")
            proc, api = start_api(args.units, 0.2, lean=True)
            try:
                for n in range(args.rounds):
                    one = await trial_b(server, api, 1, args.units, args.per_daemon, tmp, n)
                    three = await trial_b(server, api, 3, args.units, args.per_daemon, tmp, n)
                    ideal = args.units * 0.2 / args.per_daemon
                    print(f"(b) {args.units} units x 200 ms, {args.per_daemon} requests per daemon: 1 daemon "
                          f"{one:.2f} s (ideal {ideal:.2f}), 3 daemons {three:.2f} s (ideal {ideal / 3:.2f}); "
                          f"speed-up {one / three:.2f} x, target >= 2.5, ratio {one / three / 2.5:.2f}; "
                          f"load {os.getloadavg()[0]:.2f}")
            finally:
                stop(proc)
            seconds, shares = await bench_c(server, args.noop, args.claim)
            rate = args.noop / seconds
            print(f"(c) {args.noop} no-op units, 3 members, claims of {args.claim}: {seconds:.2f} s, "
                  f"{rate:,.0f} units/s (shares {shares}), target >= 2,000/s, ratio {rate / 2000:.2f}; "
                  f"load {os.getloadavg()[0]:.2f}")
            resumed, finished = await bench_d(server, tmp, args.lease)
            print(f"(d) lease {args.lease} s: a killed daemon's units claimed by the other after {resumed:.2f} s "
                  f"(target <= {2 * args.lease:.1f} s, ratio {resumed / (2 * args.lease):.2f}), done after "
                  f"{finished:.2f} s (each unit's request takes 1 s); load {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--per-daemon", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--noop", type=int, default=20_000)
    parser.add_argument("--claim", type=int, default=100)
    parser.add_argument("--lease", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
