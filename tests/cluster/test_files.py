"""The ``files`` source in a cluster: three real ``sluice serve`` members on one temporary
PostgreSQL share the download units of a directory of CSV files (a ``system:local`` directory
all members see, as a shared mount would be). Every file is ingested once, by one member; after
the files change (records moved between files, records dropped) the dataset equals the files'
records again: per-file deletions made by one member never delete a record another member's file
gave meanwhile (their ``_if_hash`` is checked in the write's transaction, serialised on the
dataset's row).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

from runtime.store import PostgresStore
from tests.cluster.conftest import Cluster
from tests.cluster.test_cluster import done_by

FILES = 24


def write_files(drop: Path, layout: dict[str, list[int]], mtime: int) -> None:
    import os

    for name, ids in layout.items():
        path = drop / name
        path.write_text("id,value\n" + "".join(f"{i},{name}:{i}\n" for i in ids))
        os.utime(path, (mtime, mtime))


def pipes(drop: Path) -> list[dict[str, Any]]:
    return [
        {"_id": "drop", "type": "system:local", "root": str(drop)},
        {"_id": "listing", "type": "pipe", "source": {"type": "file_listing", "system": "drop", "include": ["*.csv"]},
         "pump": {"mode": "manual"}},
        {"_id": "ingest", "type": "pipe", "pump": {"mode": "manual"},
         "source": {"type": "files", "system": "drop", "listing_dataset": "listing", "primary_key": "id",
                    "concurrency": 6, "retry_backoff_s": 0.1}},
    ]


async def live(store: PostgresStore) -> dict[str, str]:
    entities, _ = await store.read("ingest", since=None, limit=100_000)
    return {e["_id"]: e["value"] for e in entities if not e.get("_deleted")}


async def until(store: PostgresStore, cluster: Cluster, want: dict[str, str]) -> None:
    """Run the listing, then (once that run ended) the download, started on the first member,
    until the dataset holds ``want`` and no unit runs (a bound of 90 s, not a timing assertion)."""
    api = cluster.api_of(cluster.members[0])
    deadline = time.monotonic() + 90

    def late() -> str:
        return "\n".join(m.log()[-3000:] for m in cluster.members)

    runs = (await api.get("/api/pipes/listing"))["runs"]
    await cluster.start_run(cluster.members[0], pipe="listing")
    while (view := await api.get("/api/pipes/listing"))["runs"] == runs or view["running"]:
        assert time.monotonic() < deadline, late()
        await anyio.sleep(0.05)
    assert view["last_run"]["status"] == "completed", view["last_run"]
    await cluster.start_run(cluster.members[0], pipe="ingest")
    while True:
        units, got = await cluster.units("ingest"), await live(store)
        if got == want and units and all(s == "done" for s in units.values()):
            return
        assert time.monotonic() < deadline, (
            f"not converged: missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}, "
            f"units {units}\n{late()}")
        await anyio.sleep(0.1)


async def test_members_share_the_files_and_a_moved_record_survives(cluster: Cluster, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    first = {f"f{n:02d}.csv": list(range(n * 10, n * 10 + 10)) for n in range(FILES)}
    write_files(drop, first, 1_700_000_000)
    cluster.configure(pipes(drop))
    members = cluster.start(3)
    store = PostgresStore(cluster.url)
    await store.open()
    try:
        await until(store, cluster, {str(i): f"{name}:{i}" for name, ids in first.items() for i in ids})
        assert await cluster.versions("ingest") == {str(i): 1 for ids in first.values() for i in ids}
        # each file's two last records move to the next file; each file drops its first record
        second = {name: ids[1:8] + (first[f"f{n - 1:02d}.csv"][8:] if n else []) for n, (name, ids)
                  in enumerate(first.items())}
        write_files(drop, second, 1_700_000_100)
        want = {str(i): f"{name}:{i}" for name, ids in second.items() for i in ids}
        await until(store, cluster, want)
        gone = {str(ids[0]) for ids in first.values()} | {str(i) for i in first[f"f{FILES - 1:02d}.csv"][8:]}
        everything = await store.read("ingest", since=None, limit=100_000)
        assert {e["_id"] for e in everything[0] if e.get("_deleted")} == gone
    finally:
        await store.close()
    await anyio.sleep(1.5)  # the members' last runs end and log what they did
    shares = [done_by(m, "ingest") for m in members]
    assert sum(shares) >= 2 * FILES and sum(1 for s in shares if s) >= 2, shares
