"""The two-step file download against real servers on 127.0.0.1: an asyncssh SFTP server, moto's
S3 and Azurite (fixtures in conftest.py). GCS: no emulator obstore can talk to is installable here
(test-infra.md), so system:gcs is tested only as far as building its store from config."""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime import Runtime
from tests.files.common import csv_rows, live, run_both, two_step
from tests.files.conftest import Backend


def config(tmp_path: Path, backend: Backend) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step(backend.system(), listing={"include": ["*.csv"]})))
    return cfg


async def test_same_second_files_overwrite_tmp_and_malformed(tmp_path: Path, backend: Backend) -> None:
    for i in range(5):
        backend.put(f"f{i}.csv", csv_rows([i * 10, i * 10 + 1]).encode(), mtime=1_700_000_000)
    backend.put("up.csv.tmp", csv_rows([99]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        lr, fr = await run_both(rt)
        assert lr.status == fr.status == "completed", (lr.error, fr.error)
        assert set(await live(rt, "ingest")) == {str(n) for i in range(5) for n in (i * 10, i * 10 + 1)}
        # two more files in that same mtime second, one malformed, one with a year-old mtime
        backend.put("f5.csv", csv_rows([50]).encode(), mtime=1_700_000_000)
        backend.put("bad.csv", b"id,value\n1,a\n2,b,extra\n", mtime=1_700_000_000)
        backend.put("old.csv", csv_rows([70]).encode(), mtime=1_700_000_000 - 365 * 86400)
        # f0 overwritten under the same path without row 1
        backend.put("f0.csv", csv_rows([0], prefix="w").encode(), mtime=1_700_000_100)
        lr, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        ids = await live(rt, "ingest")
        assert "50" in ids and "70" in ids and "99" not in ids
        assert "1" not in ids and ids["0"]["value"] == "w0"  # per-file deletion tracking
        units = {u.key: u for u in await rt.store.work_units("ingest")}
        assert units["bad.csv"].status == "failed" and "bad.csv:3" in (units["bad.csv"].last_error or "")
        if backend.name != "azure":
            before = backend.downloads()
            await run_both(rt)
            assert backend.downloads() - before == 1  # only the failed bad.csv is read again


def test_gcs_config_builds_a_store() -> None:
    from connectors.storage.objects import GcsSystemConfig, make_store

    store = make_store(GcsSystemConfig(type="system:gcs", bucket="b", endpoint="http://127.0.0.1:1"))
    assert type(store).__name__ == "GCSStore"
