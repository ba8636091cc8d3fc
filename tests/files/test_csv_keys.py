"""The CSV keys of the ``files`` source (``has_header``, ``field_names``, ``column_types``) on a
local directory and the asyncssh SFTP server: headerless files, typed columns, and the data
safety of a file whose layout changed (a renamed or reordered column, a cell not of its type):
that file's unit fails naming the file, line and column; nothing of that version is committed and
the entities of its earlier version stay; the other files are ingested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime import ConfigError, Runtime
from runtime.config import load_config
from runtime.plugins import default_registry
from tests.files.common import live, run_both, two_step
from tests.files.conftest import Backend

pytestmark = pytest.mark.parametrize("backend", ["local", "sftp"], indirect=True)

TYPES = {"qty": "integer", "price": "number", "paid": "boolean", "note": "string"}


def config(tmp_path: Path, backend: Backend, **files: Any) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    pipes = two_step(backend.system(), files={"retry_backoff_s": 3600, **files})
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg


async def test_headerless_typed_file(tmp_path: Path, backend: Backend) -> None:
    backend.put("orders.csv", b"1;3;9.5;yes;a\n2;;-1.25e2;FALSE;\n")
    cfg = config(tmp_path, backend, has_header=False, delimiter=";", field_names=["id", "qty", "price", "paid", "note"],
                 column_types=TYPES)
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        got = {k: {c: e[c] for c in ("qty", "price", "paid", "note")} for k, e in (await live(rt, "ingest")).items()}
    assert got == {"1": {"qty": 3, "price": 9.5, "paid": True, "note": "a"},
                   "2": {"qty": None, "price": -125.0, "paid": False, "note": ""}}  # empty typed cell: null


@pytest.mark.parametrize(("body", "says", "line"), [
    (b"id,qty,price,paid,note\n1,4,1.0,no,x\n2,many,1.0,no,y\n", "column 'qty': 'many' is not a 64-bit integer", 3),
    (b"id,qty,price,paid,note\n1,99999999999999999999,1.0,no,x\n", "'99999999999999999999' is not a 64-bit integer", 2),
    (b"id,qty,price,paid,note\n1,4,1e999,no,x\n", "column 'price': '1e999' is not a finite number", 2),
    (b"id,qty,price,paid,note\n1,4,nan,no,x\n", "column 'price': 'nan' is not a finite number", 2),
    (b"id,qty,price,paid,note\n1,4,1.0,maybe,x\n", "column 'paid': 'maybe' is not a boolean", 2),
    (b"id,price,qty,paid,note\n1,1.0,4,no,x\n",
     "the header is ['id', 'price', 'qty', 'paid', 'note'], field_names expects", 1),
    (b"id,quantity,price,paid,note\n1,4,1.0,no,x\n", "a column was renamed, added, removed or moved", 1),
])
async def test_a_changed_layout_fails_the_file_and_keeps_its_entities(tmp_path: Path, backend: Backend, body: bytes,
                                                                      says: str, line: int) -> None:
    """DATA SAFETY: the new version of ``a.csv`` has a column moved or renamed, or a cell not of
    its type: its unit fails naming the file and line; the earlier version's entities stay
    (nothing deleted, nothing of the new version written) and ``b.csv`` is ingested."""
    names = ["id", "qty", "price", "paid", "note"]
    backend.put("a.csv", b"id,qty,price,paid,note\n1,3,9.5,yes,a\n7,1,2,no,b\n", mtime=1_700_000_000)
    cfg = config(tmp_path, backend, field_names=names, column_types=TYPES)
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        before = await live(rt, "ingest")
        assert set(before) == {"1", "7"} and before["7"]["price"] == 2.0
        backend.put("a.csv", body, mtime=1_700_000_100)
        backend.put("b.csv", b"id,qty,price,paid,note\n9,1,1,1,z\n", mtime=1_700_000_100)
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        after = await live(rt, "ingest")
        unit = {u.key: u for u in await rt.store.work_units("ingest")}["a.csv"]
    assert unit.status == "failed" and says in (unit.last_error or "") and f"a.csv:{line}" in (unit.last_error or "")
    assert {k: v for k, v in after.items() if k != "9"} == before  # the earlier version, whole
    assert after["9"]["qty"] == 1 and after["9"]["paid"] is True


async def test_a_typed_column_the_header_lacks_fails_the_file(tmp_path: Path, backend: Backend) -> None:
    backend.put("a.csv", b"id,qty\n1,2\n")
    cfg = config(tmp_path, backend, column_types={"amount": "number"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        unit = {u.key: u for u in await rt.store.work_units("ingest")}["a.csv"]
        assert await live(rt, "ingest") == {}
    assert unit.status == "failed" and "column_types names ['amount']" in (unit.last_error or "")


@pytest.mark.parametrize(("keys", "says"), [
    ({"has_header": False}, "has_header: false needs field_names"),
    ({"field_names": ["id", "id"]}, "field_names must be distinct"),
    ({"field_names": ["id"], "column_types": {"qty": "integer"}}, "column_types names ['qty'], which field_names"),
    ({"column_types": {"qty": "decimal"}}, "column_types.qty"),
    ({"format": "ndjson", "has_header": False, "field_names": ["id"]},
     "has_header, field_names apply only to format csv"),
])
def test_csv_key_errors(tmp_path: Path, backend: Backend, keys: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config(tmp_path, backend, **keys), default_registry())
    assert says in str(caught.value) and "ingest" in str(caught.value)
