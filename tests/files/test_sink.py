"""The ``files`` sink: a dataset written as NDJSON or CSV files to each file system, rolled by
entity count, each file uploaded under a temporary name then renamed, the checkpoint committed
after the rename (at-least-once)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from runtime import Runtime
from tests.files.conftest import Backend


def out_values(backend: Backend) -> list[str]:
    """The ``value`` of every NDJSON line the sink wrote under ``out/``, sorted."""
    return sorted(orjson.loads(line)["value"] for p, body in backend.files().items() if p.startswith("out/")
                  for line in body.splitlines())

N = 250


def config(tmp_path: Path, backend: Backend, version: int = 1, **sink: Any) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    people = [{"_id": f"p{i:05}", "name": f"n{i}" + ("x" if i < 10 and version > 1 else ""), "tags": [i % 3]}
              for i in range(N)]
    pipes = [{"_id": "drop", **backend.system()},
             {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": people}},
             {"_id": "export", "type": "pipe", "batch_size": 50, "source": {"type": "dataset", "dataset": "people"},
              "sink": {"type": "files", "system": "drop", "path": "out", "prefix": "people-", "roll_entities": 100,
                       **sink}}]
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg


def exported(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    return {p: [orjson.loads(line) for line in data.splitlines()] for p, data in backend.files().items()}


async def run_both(rt: Runtime) -> Any:
    await rt.run_pipe("people")
    return await rt.run_pipe("export")


async def test_dataset_to_files_rolled_renamed_once(tmp_path: Path, backend: Backend) -> None:
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        r = await run_both(rt)
        assert r.status == "completed", r.error
        files = exported(backend)
        assert all(p.startswith("out/people-") and p.endswith(".ndjson") for p in files), list(files)
        assert sorted(len(v) for v in files.values()) == [50, 100, 100]
        assert sorted(e["_id"] for v in files.values() for e in v) == [f"p{i:05}" for i in range(N)]
        r = await run_both(rt)  # nothing changed: no file
        assert r.status == "completed" and len(backend.files()) == 3
    async with Runtime(config(tmp_path, backend, version=2), data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        new = [v for p, v in exported(backend).items() if p not in files]
        assert len(new) == 1 and sorted(e["_id"] for e in new[0]) == [f"p{i:05}" for i in range(10)]


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_csv_files(tmp_path: Path, backend: Backend) -> None:
    cfg = config(tmp_path, backend, format="csv", columns=["_id", "name", "tags"], roll_entities=N)
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        r = await run_both(rt)
        assert r.status == "completed", r.error
    (data,) = backend.files().values()
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["_id", "name", "tags"] and rows[1] == ["p00000", "n0", "[0]"] and len(rows) == N + 1


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_failed_rename_commits_nothing_and_the_next_run_writes_it_again(tmp_path: Path,
                                                                               backend: Backend) -> None:
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        backend.server.counters.fail_renames = True  # type: ignore[attr-defined]
        r = await run_both(rt)
        assert r.status == "failed" and "injected" in str(r.error)
        (left,) = backend.files()  # under its temporary name only
        assert left.split("/")[-1].startswith(".") and left.endswith(".tmp")
        state = await rt.store.pipe_state("export")
        assert state.since is None  # the checkpoint did not move
        assert state.info["files_sink_uploading"] == left
        backend.server.counters.fail_renames = False  # type: ignore[attr-defined]
        r = await rt.run_pipe("export")
        assert r.status == "completed", r.error
        final = exported(backend)
        assert left not in final  # the next run deleted the failed one's temporary file first
        assert all(not p.split("/")[-1].startswith(".") for p in final)
        assert sorted(e["_id"] for v in final.values() for e in v) == [f"p{i:05}" for i in range(N)]
        assert (await rt.store.pipe_state("export")).info["files_sink_uploading"] is None


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_the_checkpoint_follows_the_renamed_files(tmp_path: Path, backend: Backend) -> None:
    """Rolls of 30 in batches of 50 never end exactly where a batch ends: the checkpoint of each
    batch is committed at the first rename after it (every entity of it is then in renamed
    files), not only at the end of the run. The fourth rename fails: the run fails with the
    checkpoint after the batches that were renamed whole, and the next run writes only what came
    after it."""
    counters = backend.server.counters  # type: ignore[attr-defined]
    renamed: list[str] = []

    def count(path: str) -> None:
        renamed.append(path)
        if len(renamed) == 3:
            counters.fail_renames = True  # the fourth fails

    counters.on_rename = count
    async with Runtime(config(tmp_path, backend, roll_entities=30), data_dir=tmp_path / "data") as rt:
        r = await run_both(rt)
        assert r.status == "failed" and "injected" in str(r.error)
        since = (await rt.store.pipe_state("export")).since
        first = {p: v for p, v in exported(backend).items() if not p.split("/")[-1].startswith(".")}
        assert sorted(len(v) for v in first.values()) == [30, 30, 30]
        assert since is not None and 49 <= since < 90  # at least the first batch (offsets 0-49), renamed
        counters.fail_renames, counters.on_rename = False, None
        assert (await rt.run_pipe("export")).status == "completed"
    again = [e["_id"] for p, v in exported(backend).items() if p not in first for e in v]
    assert sorted(again) == [f"p{i:05}" for i in range(since + 1, N)]  # resumed after the checkpoint


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_files_rolled_by_bytes(tmp_path: Path, backend: Backend) -> None:
    """``roll_bytes``: a file is rolled by the entity that takes it to the limit or past it."""
    limit = 4000
    async with Runtime(config(tmp_path, backend, roll_bytes=limit), data_dir=tmp_path / "data") as rt:
        assert (await run_both(rt)).status == "completed"
    files = sorted(backend.files().items())
    assert len(files) > 3
    for _, body in files[:-1]:
        last = len(body) - len(body.rstrip(b"\n").rsplit(b"\n", 1)[0]) - 1  # the last line, with its newline
        assert len(body) >= limit and len(body) - last < limit  # reached by its last entity, not before
    assert len(files[-1][1]) <= limit + 200
    assert sum(body.count(b"\n") for _, body in files) == N


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_files_to_files_a_changed_file_is_exported_once(tmp_path: Path, backend: Backend) -> None:
    """A ``files`` source into a ``files`` sink (no dataset between): a new version of a file is
    exported once, its unit done in the same run. The sink keeps each batch's work-unit progress
    until a rename (a later checkpoint does not drop an earlier unit's), and the source does no
    per-file deletion tracking into a sink that writes no dataset (it waited for a commit that a
    files sink makes only at its next rename)."""
    from tests.files.common import csv_rows

    backend.put("in/a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    backend.put("in/b.csv", csv_rows([3]).encode(), mtime=1_700_000_000)
    cfg = tmp_path / "config"
    cfg.mkdir()
    pipes = [{"_id": "drop", **backend.system()},
             {"_id": "listing", "type": "pipe", "source": {"type": "file_listing", "system": "drop", "path": "in"}},
             {"_id": "relay", "type": "pipe",
              "source": {"type": "files", "system": "drop", "listing_dataset": "listing", "primary_key": "id"},
              "sink": {"type": "files", "system": "drop", "path": "out", "roll_entities": 1000}}]
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))

    def out() -> list[str]:
        return out_values(backend)

    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        for _ in range(2):
            assert (await rt.run_pipe("listing")).ok
            r = await rt.run_pipe("relay")
            assert r.status == "completed", r.error
        assert out() == ["v1", "v2", "v3"]  # the second run exported nothing again
        backend.put("in/a.csv", csv_rows([1], prefix="w").encode(), mtime=1_700_000_100)
        assert (await rt.run_pipe("listing")).ok
        r = await rt.run_pipe("relay")
        assert r.status == "completed", r.error
        units = {u.key: u for u in await rt.store.work_units("relay")}
        assert {k: u.status for k, u in units.items()} == {"in/a.csv": "done", "in/b.csv": "done"}
        assert out() == ["v1", "v2", "v3", "w1"]


async def test_files_to_files_post_action_is_made_by_the_next_run_without_waiting(
        tmp_path: Path, backend: Backend) -> None:
    """A ``files`` source with ``after_ingest`` into a ``files`` sink: the sink commits a file's
    entities only at its next rename (here the run's end), so the source does not wait for that
    commit (it waited 120 s per run, then gave up): the run exports the file and leaves the
    post-action pending; the next run deletes the file without exporting it again."""
    import structlog

    from tests.files.common import csv_rows

    backend.put("in/a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    cfg = tmp_path / "config"
    cfg.mkdir()
    pipes = [{"_id": "drop", **backend.system()},
             {"_id": "relay", "type": "pipe",
              "source": {"type": "files", "system": "drop", "listing": {"path": "in"}, "primary_key": "id",
                         "after_ingest": {"delete": True}},
              "sink": {"type": "files", "system": "drop", "path": "out", "roll_entities": 1000}}]
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))

    def out() -> list[str]:
        return out_values(backend)

    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        with structlog.testing.capture_logs() as logs:
            r = await rt.run_pipe("relay")
        assert r.status == "completed", r.error
        events = [e["event"] for e in logs]
        assert "files.post_action_deferred" in events and "files.commit_not_seen" not in events
        assert out() == ["v1", "v2"] and backend.exists("in/a.csv")
        unit = (await rt.store.work_units("relay"))[0]
        assert unit.status == "done" and unit.watermark["post_action"] == "pending"
        r = await rt.run_pipe("relay")
        assert r.status == "completed", r.error
        assert out() == ["v1", "v2"] and not backend.exists("in/a.csv")
        unit = (await rt.store.work_units("relay"))[0]
        assert unit.watermark["post_action"] == "done" and unit.watermark["removed"] is True
