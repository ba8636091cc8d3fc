"""The two-step file download over ``system:local`` (a directory: the same code path as the
object stores, through obstore's LocalStore)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from runtime import Runtime
from tests.files.common import csv_rows, live, run_both, two_step, write


def config(tmp_path: Path, **kw) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    (tmp_path / "drop").mkdir(exist_ok=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step({"type": "system:local", "root": str(tmp_path / "drop")}, **kw)))
    return cfg


async def test_smoke(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    write(drop / "a.csv", csv_rows(range(3)))
    write(drop / "b.ndjson", '{"id": 10}\n{"id": 11}\n')
    async with Runtime(config(tmp_path), data_dir=tmp_path / "data") as rt:
        lr, fr = await run_both(rt)
        assert lr.status == "completed", lr.error
        assert fr.status == "completed", fr.error
        print(await live(rt, "listing"))
        print(await live(rt, "ingest"))
        print(await rt.store.work_units("ingest"))
