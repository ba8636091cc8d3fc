"""A record that moves from one file to another while both are read at once is not deleted by
the first file's per-file deletions (SQLite and PostgreSQL: ``store_url``).

The interleaving that loses it cannot be produced by a server: it lies between two of Sluice's
own steps (the first file reads its entities from the dataset's index, then the second file's
entities are committed, then the first file's deletions are written). The test makes it happen
every time: the second file's download waits for the first file's index read, and that read
returns only once the second file's version is committed. Store, files and pipes are all real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from connectors.storage.objects import LocalSystem
from runtime import Runtime
from tests.files.common import csv_rows, live, run_both, two_step
from tests.files.conftest import LocalBackend


async def test_an_id_moved_to_another_file_read_at_once_is_not_deleted(
        tmp_path: Path, store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend(tmp_path / "drop")
    backend.put("a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    backend.put("b.csv", csv_rows([3]).encode(), mtime=1_700_000_000)
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step(backend.system(), files={"concurrency": 2})))
    async with Runtime(cfg, data_dir=tmp_path / "data", store=store_url) as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert {k: e["source_file"]["path"] for k, e in (await live(rt, "ingest")).items()} == {
            "1": "a.csv", "2": "a.csv", "3": "b.csv"}
        # id 2 moves from a.csv to b.csv
        backend.put("a.csv", csv_rows([1], prefix="w").encode(), mtime=1_700_000_100)
        backend.put("b.csv", csv_rows([2, 3], prefix="w").encode(), mtime=1_700_000_100)
        store, real_page = rt.store, rt.store.index_page
        stale: list[list[str]] = []

        async def page_then_wait(dataset: str, path: Any, key: str, **kw: Any) -> Any:
            page = await real_page(dataset, path, key, **kw)
            if key == "s:a.csv" and not stale:
                stale.append([e["_id"] for e in page])
                with anyio.fail_after(30):  # b.csv's new version of id 2 committed meanwhile
                    while (await store.get("ingest", "2"))[0]["source_file"]["path"] != "b.csv":
                        await anyio.sleep(0.01)
            return page

        real_download = LocalSystem.download

        async def download_after_read(self: LocalSystem, path: str, dest: Path) -> int:
            if path == "b.csv":
                with anyio.fail_after(30):
                    while not stale:
                        await anyio.sleep(0.01)
            return await real_download(self, path, dest)

        monkeypatch.setattr(LocalSystem, "download", download_after_read)
        store.index_page = page_then_wait  # type: ignore[method-assign]
        try:
            _, fr = await run_both(rt)
        finally:
            del store.index_page
        assert fr.status == "completed", fr.error
        assert stale == [["1", "2"]]  # a.csv's deletions were read while id 2 was still a.csv's
        ids = await live(rt, "ingest")
        assert {k: (e["source_file"]["path"], e["value"]) for k, e in ids.items()} == {
            "1": ("a.csv", "w1"), "2": ("b.csv", "w2"), "3": ("b.csv", "w3")}
