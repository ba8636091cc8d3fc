"""The one-pipe form: a ``files`` source with a ``listing`` block lists, then downloads, in one
pipe, with the same ledger and semantics as the two-step form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runtime import Runtime
from tests.files.common import csv_rows, live
from tests.files.conftest import Backend


def config(tmp_path: Path, backend: Backend, **listing: object) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    pipes = [{"_id": "drop", **backend.system()},
             {"_id": "ingest", "type": "pipe",
              "source": {"type": "files", "system": "drop", "primary_key": "id", "retry_backoff_s": 3600,
                         "listing": {"include": ["*.csv"], "recursive": True, **listing}}}]
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg


@pytest.mark.parametrize("backend", ["local", "sftp", "s3"], indirect=True)
async def test_one_pipe_form(tmp_path: Path, backend: Backend) -> None:
    backend.put("a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    backend.put("sub/b.csv", csv_rows([3]).encode(), mtime=1_700_000_000)
    backend.put("c.csv.tmp", csv_rows([4]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        r = await rt.run_pipe("ingest")
        assert r.status == "completed", r.error
        assert set(await live(rt, "ingest")) == {"1", "2", "3"}
        backend.put("a.csv", csv_rows([1], prefix="w").encode(), mtime=1_700_000_100)  # overwritten, row 2 gone
        backend.remove("sub/b.csv")
        backend.put("old.csv", csv_rows([5]).encode(), mtime=1_600_000_000)
        r = await rt.run_pipe("ingest")
        assert r.status == "completed", r.error
        ids = await live(rt, "ingest")
        assert set(ids) == {"1", "3", "5"} and ids["1"]["value"] == "w1"  # b.csv's entities stay
        units = {u.key: u.status for u in await rt.store.work_units("ingest")}
        assert units == {"a.csv": "done", "old.csv": "done"}  # sub/b.csv's unit retired
        if backend.name in ("sftp", "s3"):
            before = backend.downloads()
            r = await rt.run_pipe("ingest")
            assert r.status == "completed" and backend.downloads() == before


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_one_pipe_listing_failure_reads_and_deletes_nothing(tmp_path: Path, backend: Backend) -> None:
    backend.put("a.csv", csv_rows([1]).encode())
    backend.put("sub/b.csv", csv_rows([2]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        await rt.run_pipe("ingest")
        backend.put("a.csv", csv_rows([1], prefix="w").encode(), mtime=1_800_000_000)
        backend.server.counters.fail_listing.add("sub")  # type: ignore[attr-defined]
        reads = backend.downloads()
        r = await rt.run_pipe("ingest")
        assert r.status == "failed" and "injected" in str(r.error)
        assert backend.downloads() == reads
        assert {u.key for u in await rt.store.work_units("ingest")} == {"a.csv", "sub/b.csv"}
        assert (await live(rt, "ingest"))["1"]["value"] == "v1"
