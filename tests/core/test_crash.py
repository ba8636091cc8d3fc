"""Crash safety: ``sluice run`` killed with SIGKILL mid-run, then restarted, ends where an
uninterrupted run ends (DESIGN.md: "A run stopped or killed anywhere resumes from the last
committed checkpoint and produces the same dataset as an uninterrupted run").

The config has two pipes: ``raw`` (file source over a generated NDJSON file of N entities ->
dataset ``raw``; no continuation, every run is a full run) and ``derived`` (dataset ``raw`` ->
python transform -> dataset ``derived``; chronological, checkpointed per batch). A monitor polls
the committed offsets in the store (the SQLite file read only, WAL readers never block the
writer; or the PostgreSQL ``datasets`` table) and sends SIGKILL when a dataset reaches a given
fraction; the state after each kill is checked through the store API to prove the kill landed
mid-run (some but not all entities committed, the killed run never logged its end). The update
test (on PostgreSQL with a third of the entities) and the many-kills test run on both stores.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import asyncpg
import orjson
import yaml

from runtime.store import make_store

N = 60_000
SLUICE = str(Path(sys.executable).parent / "sluice")
TRANSFORM = '''
def derive(entities):
    """Reshape each raw entity; deletions pass through as deletions."""
    out = []
    for e in entities:
        d = {"_id": e["_id"], "n2": e.get("n", 0) * 2, "label": str(e.get("name", "")).upper(),
             "group": e.get("group"), "first_tag": (e.get("tags") or [None])[0]}
        if e.get("_deleted") is True:
            d["_deleted"] = True
        out.append(d)
    return out
'''
PIPES = [
    {"_id": "raw", "type": "pipe",
     "source": {"type": "file", "path": "rows.ndjson", "primary_key": "key"},
     "sink": {"type": "dataset", "dataset": "raw"}},
    {"_id": "derived", "type": "pipe",
     "source": {"type": "dataset", "dataset": "raw"},
     "transform": {"type": "python", "function": "crash_derive:derive"},
     "sink": {"type": "dataset", "dataset": "derived"}},
]


def record(i: int, version: int = 1) -> dict:
    return {"key": f"e{i:06d}", "n": i * version, "name": f"entity {i} v{version}",
            "group": i % 97, "tags": [f"t{i % 7}", "x"]}


def write_rows(cfg: Path, records: list[dict]) -> None:
    (cfg / "rows.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def make_config(root: Path, records: list[dict]) -> Path:
    cfg = root / "config"
    cfg.mkdir(parents=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(PIPES, sort_keys=False))
    (cfg / "crash_derive.py").write_text(TRANSFORM)
    write_rows(cfg, records)
    return cfg


def start(cfg: Path, data: Path, store_url: str | None = None) -> subprocess.Popen[bytes]:
    log = open(data.parent / f"{data.name}.log", "ab")  # noqa: SIM115 - closed by the child's exit
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    store = ["--store", store_url] if store_url else []
    try:
        return subprocess.Popen([SLUICE, "run", str(cfg), "--data-dir", str(data), *store],
                                stdout=log, stderr=log, env=env)
    finally:
        log.close()


def run_to_end(cfg: Path, data: Path, store_url: str | None = None) -> None:
    proc = start(cfg, data, store_url)
    assert proc.wait(timeout=90) == 0, (data.parent / f"{data.name}.log").read_text()


def committed(db: Path, dataset: str) -> int:
    """Committed offset of ``dataset`` read straight from the SQLite file (-1: nothing yet)."""
    if not db.exists():
        return -1
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT committed FROM datasets WHERE name = ?", (dataset,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return -1  # schema not created yet, or the file is being created
    return -1 if row is None else int(row[0])


async def pg_committed(conn: asyncpg.Connection, dataset: str) -> int:
    """Committed offset of ``dataset`` in a PostgreSQL store (-1: nothing yet)."""
    try:
        found = await conn.fetchval("SELECT committed FROM datasets WHERE name = $1", dataset)
    except asyncpg.UndefinedTableError:
        return -1  # schema not created yet
    return -1 if found is None else int(found)


async def kill_when(cfg: Path, data: Path, store_url: str | None = None, *, dataset: str | None = None,
                    fraction: float = 0.0, delay: float = 0.0, total: int = N) -> bool:
    """Start a run and SIGKILL it once ``dataset`` has ``fraction`` x ``total`` versions
    committed, or after ``delay`` seconds when no dataset is given. Returns False if the run
    ended first."""
    proc = start(cfg, data, store_url)
    conn = await asyncpg.connect(store_url) if store_url else None
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if dataset is None:
                reached = time.monotonic() - t0 >= delay
            elif conn is not None:
                reached = await pg_committed(conn, dataset) + 1 >= fraction * total
            else:
                reached = committed(data / "sluice.db", dataset) + 1 >= fraction * total
            if reached:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return True
            assert time.monotonic() - t0 < 60, "run neither reached the kill point nor ended"
            await anyio.sleep(0.003)
        return False
    finally:
        if conn is not None:
            await conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def snapshot(data: Path, store_url: str | None = None) -> dict[str, dict[str, object]]:
    """Per dataset: latest state {id: (hash, deleted)}, versions per id, and consecutive
    duplicate versions (same id, same hash twice in a row: must never happen)."""
    store = make_store(store_url, data)
    await store.open()
    try:
        out: dict[str, dict[str, object]] = {}
        for info in await store.datasets():
            latest, _ = await store.read(info.name, since=None, limit=10 * N)
            history, _ = await store.read(info.name, since=None, limit=10 * N, history=True)
            last_hash: dict[str, str] = {}
            duplicates = 0
            for v in history:
                duplicates += last_hash.get(v["_id"]) == v["_hash"]
                last_hash[v["_id"]] = v["_hash"]
            out[info.name] = {
                "latest": {e["_id"]: (e["_hash"], e.get("_deleted") is True) for e in latest},
                "versions": Counter(v["_id"] for v in history),
                "duplicates": duplicates,
                "ids": info.ids,
                "committed": info.committed,
            }
        return out
    finally:
        await store.close()


async def last_run_unfinished(data: Path, pipe: str, store_url: str | None = None) -> bool:
    """True when the pipe's last logged run started and never logged completed/failed/stopped."""
    store = make_store(store_url, data)
    await store.open()
    try:
        events = await store.execution_log(pipe, limit=10_000)
    finally:
        await store.close()
    runs = [e for e in events if e.run_id != "-"]
    return bool(runs) and runs[-1].event == "run-started"


def assert_same(got: dict, want: dict, *, exact_versions: bool = True) -> None:
    assert set(got) == set(want) == {"raw", "derived"}
    for name in want:
        g, w = got[name], want[name]
        assert g["latest"] == w["latest"], f"dataset {name}: latest versions differ"
        assert g["ids"] == w["ids"], name
        assert g["duplicates"] == 0, f"dataset {name}: a version repeats its predecessor"
        if exact_versions:
            assert g["versions"] == w["versions"], f"dataset {name}: version counts differ"


async def test_sigkill_at_many_points_then_restart_equals_uninterrupted_run(tmp_path: Path,
                                                                            store_url: str | None) -> None:
    records = [record(i) for i in range(N)]
    ref_cfg = make_config(tmp_path / "ref", records)
    run_to_end(ref_cfg, tmp_path / "ref" / "data")  # the reference runs on SQLite, whichever store crashes
    reference = await snapshot(tmp_path / "ref" / "data")
    assert all(reference[d]["ids"] == N for d in ("raw", "derived"))
    assert all(set(reference[d]["versions"].values()) == {1} for d in ("raw", "derived"))

    cfg = make_config(tmp_path / "crash", records)
    data = tmp_path / "crash" / "data"
    kills = [
        {"delay": 0.25},                             # during start-up
        {"dataset": "raw", "fraction": 0.2},         # first run of raw, a fifth written
        {"delay": 1.0},                              # re-reading raw: mostly no-op writes
        {"dataset": "raw", "fraction": 0.65},        # raw past where the last run stopped
        {"dataset": "derived", "fraction": 0.15},    # raw done, derived started
        {"dataset": "derived", "fraction": 0.6},     # derived resumed from its checkpoint
    ]
    mid_run = 0
    for kill in kills:
        assert await kill_when(cfg, data, store_url, **kill), f"run ended before the kill point {kill}"
        if "dataset" in kill:
            state = await snapshot(data, store_url)
            ds = state[kill["dataset"]]
            assert 0 < ds["ids"] < N, f"kill {kill} did not land mid-run: {ds['ids']} ids"
            assert await last_run_unfinished(data, kill["dataset"], store_url)
            assert set(ds["versions"].values()) == {1}, "a killed run left duplicate versions"
            mid_run += 1
    assert mid_run == 4

    run_to_end(cfg, data, store_url)
    assert_same(await snapshot(data, store_url), reference)
    assert all(set(reference[d]["versions"].values()) == {1} for d in ("raw", "derived"))

    run_to_end(cfg, data, store_url)  # and a further run changes nothing
    assert_same(await snapshot(data, store_url), reference)


async def test_sigkill_then_source_update_then_restart(tmp_path: Path, store_url: str | None) -> None:
    """Killed while ``derived`` is mid-run; the file changes (updates early and late, removals,
    additions) before the restart. The result equals running the original file and then the
    updated one without a crash."""
    n = N if store_url is None else N // 3  # PostgreSQL's runs are slower here: a third still dies mid-run
    original = [record(i) for i in range(n)]
    removed = set(range(100, 150))
    changed = set(range(0, 50)) | set(range(n - 50, n))
    updated = [record(i, 2 if i in changed else 1) for i in range(n) if i not in removed]
    updated += [record(i) for i in range(n, n + 40)]

    ref_cfg = make_config(tmp_path / "ref", original)
    ref_data = tmp_path / "ref" / "data"
    run_to_end(ref_cfg, ref_data)
    write_rows(ref_cfg, updated)
    run_to_end(ref_cfg, ref_data)
    reference = await snapshot(ref_data)

    cfg = make_config(tmp_path / "crash", original)
    data = tmp_path / "crash" / "data"
    assert await kill_when(cfg, data, store_url, dataset="derived", fraction=0.3, total=n)
    state = await snapshot(data, store_url)
    assert state["raw"]["ids"] == n and 0 < state["derived"]["ids"] < n
    assert await last_run_unfinished(data, "derived", store_url)
    write_rows(cfg, updated)
    run_to_end(cfg, data, store_url)
    got = await snapshot(data, store_url)

    # latest versions, ids and deletion flags equal the uninterrupted history (run on SQLite, whichever
    # store crashed); versions per id may differ only where the crashed run never wrote the first
    # version (late updates, additions)
    assert_same(got, reference, exact_versions=False)
    for name in ("raw", "derived"):
        latest, versions = got[name]["latest"], got[name]["versions"]
        assert len(latest) == n + 40
        assert sum(deleted for _, deleted in latest.values()) == len(removed)
        assert all(latest[f"e{i:06d}"][1] for i in removed)
        untouched = [f"e{i:06d}" for i in range(150, n - 50)]
        assert all(versions[k] == 1 for k in untouched), f"{name}: duplicate versions"
        assert all(versions[f"e{i:06d}"] == 2 for i in range(50)), f"{name}: early updates"
