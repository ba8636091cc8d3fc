"""Options of the two-step file download (``file_listing`` pipe -> ``files`` pipe): the listing's
``exclude`` (its defaults, and an override replacing them), deletion tracking of the listing when a
file leaves the drop (its unit retires, its entities stay), JSON array files (plain and gzip, with
``payload_property``; a top-level object fails its unit), ``encoding``/``quotechar``/``delimiter``,
``id_expression`` with the ``file`` variables, ``file_property`` (renamed, or null: no per-file
deletion tracking), and that the S3 server's request counter counts the downloads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.storage.listing import fingerprint
from runtime import Runtime
from tests.files.common import csv_rows, live, run_both, two_step
from tests.files.conftest import Backend

LOCAL_SFTP = pytest.mark.parametrize("backend", ["local", "sftp"], indirect=True)
LOCAL = pytest.mark.parametrize("backend", ["local"], indirect=True)
DOC = {"meta": {}, "items": [{"id": 1}, {"id": 2}]}


def config(tmp_path: Path, backend: Backend, name: str = "config", **kw: Any) -> Path:
    """``pipes.yaml`` of :func:`two_step` in ``tmp_path / name``."""
    cfg = tmp_path / name
    cfg.mkdir(exist_ok=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step(backend.system(), **kw)))
    return cfg


@LOCAL_SFTP
async def test_exclude_defaults_and_override(tmp_path: Path, backend: Backend) -> None:
    """The default ``exclude`` (``*.tmp``, ``*.part``) with the default ``include`` (``*``); a custom
    ``exclude`` replaces the defaults (``Field(default_factory=...)``, not merged with them), so the
    ``.tmp`` and ``.part`` files are then listed."""
    for path in ("a.csv", "b.csv.tmp", "c.csv.part", "d.csv"):
        backend.put(path, csv_rows([1]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        lr = await rt.run_pipe("listing")
        assert lr.status == "completed", lr.error
        assert sorted(await live(rt, "listing")) == ["a.csv", "d.csv"]
    cfg = config(tmp_path, backend, "custom", listing={"exclude": ["d.*"]})
    async with Runtime(cfg, data_dir=tmp_path / "custom-data") as rt:
        lr = await rt.run_pipe("listing")
        assert lr.status == "completed", lr.error
        # the override replaced *.tmp and *.part: they are listed now
        assert sorted(await live(rt, "listing")) == ["a.csv", "b.csv.tmp", "c.csv.part"]


@LOCAL_SFTP
async def test_removed_file_deleted_from_listing_and_unit_retired(tmp_path: Path, backend: Backend) -> None:
    """A file removed from the drop gets ``_deleted`` in the listing on the next listing run (1 of
    3 ids: under the default ``circuit_breaker_deletion_factor`` 0.5); the ``files`` pipe then
    retires its unit and the entities it gave stay."""
    for i, name in enumerate(("a.csv", "b.csv", "c.csv")):
        backend.put(name, csv_rows([i * 10, i * 10 + 1]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        lr, fr = await run_both(rt)
        assert lr.status == fr.status == "completed", (lr.error, fr.error)
        assert sorted(await live(rt, "ingest")) == ["0", "1", "10", "11", "20", "21"]
        backend.remove("b.csv")
        lr = await rt.run_pipe("listing")
        assert lr.status == "completed" and lr.deleted == 1, lr.error
        latest = {e["_id"]: e for e in await rt.entities("listing")}
        assert sorted(latest) == ["a.csv", "b.csv", "c.csv"]
        assert latest["b.csv"].get("_deleted") is True
        assert not latest["a.csv"].get("_deleted") and not latest["c.csv"].get("_deleted")
        fr = await rt.run_pipe("ingest")
        assert fr.status == "completed", fr.error
        assert fr.units is not None and fr.units["retired"] == 1 and fr.units["planned"] == 2
        assert [u.key for u in await rt.store.work_units("ingest", status="retired")] == ["b.csv"]
        assert sorted(u.key for u in await rt.store.work_units("ingest")) == ["a.csv", "c.csv"]
        ingested = await live(rt, "ingest")  # the retired file's entities stay
        assert sorted(ingested) == ["0", "1", "10", "11", "20", "21"]
        assert ingested["10"]["source_file"]["path"] == "b.csv"


@LOCAL
async def test_json_arrays_plain_and_gzip(tmp_path: Path, backend: Backend) -> None:
    """``payload_property`` picks the array inside the document, in a ``.json`` and a ``.json.gz``."""
    backend.put("plain.json", json.dumps(DOC).encode())
    backend.put("packed.json.gz", gzip.compress(json.dumps({"meta": {}, "items": [{"id": 3}, {"id": 4}]}).encode()))
    cfg = config(tmp_path, backend, files={"payload_property": "items"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed" and fr.units is not None and fr.units["done"] == 2, fr.error
        ids = await live(rt, "ingest")
        assert sorted(ids) == ["1", "2", "3", "4"]
        assert ids["1"]["id"] == 1 and ids["1"]["source_file"]["path"] == "plain.json"
        assert ids["4"]["id"] == 4 and ids["4"]["source_file"]["path"] == "packed.json.gz"


@LOCAL
async def test_json_object_without_payload_property_fails(tmp_path: Path, backend: Backend) -> None:
    """A top-level object with no ``payload_property`` is not read as zero records: its unit fails
    naming the file and what it found."""
    backend.put("doc.json", json.dumps(DOC).encode())
    backend.put("ok.json", b'[{"id": 7}]')
    cfg = config(tmp_path, backend, files={"retry_backoff_s": 3600})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.units is not None and fr.units["failed"] == 1 and fr.units["done"] == 1
        units = {u.key: u for u in await rt.store.work_units("ingest")}
        assert units["doc.json"].status == "failed" and units["ok.json"].status == "done"
        error = units["doc.json"].last_error or ""
        assert "doc.json" in error and "expected a JSON array at the top level" in error
        assert "found an object with keys meta, items" in error
        assert sorted(await live(rt, "ingest")) == ["7"]


@LOCAL
async def test_encoding_delimiter_quotechar(tmp_path: Path, backend: Backend) -> None:
    """A latin-1 file, ``;``-delimited, quoted with ``'`` (a quoted ``;`` stays in its field)."""
    backend.put("l.csv", "id;name\n1;'Ærø, Øst'\n2;'a;b'\n".encode("latin-1"))
    cfg = config(tmp_path, backend, files={"delimiter": ";", "quotechar": "'", "encoding": "latin-1"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed" and fr.units is not None and fr.units["done"] == 1, fr.error
        ids = await live(rt, "ingest")
        assert sorted(ids) == ["1", "2"]
        assert ids["1"]["name"] == "Ærø, Øst" and ids["2"]["name"] == "a;b"


@LOCAL
async def test_id_expression_sees_file(tmp_path: Path, backend: Backend) -> None:
    """``id_expression`` sees ``file.path`` and ``file.version`` (the fingerprint, also the
    ``version`` of ``source_file``)."""
    backend.put("a.csv", csv_rows([1, 2]).encode())
    by_path = config(tmp_path, backend, files={"primary_key": None, "id_expression": "{{ file.path }}:{{ id }}"})
    async with Runtime(by_path, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert sorted(await live(rt, "ingest")) == ["a.csv:1", "a.csv:2"]
    expression = {"primary_key": None, "id_expression": "{{ id }}@{{ file.version }}"}
    by_version = config(tmp_path, backend, "v", files=expression)
    async with Runtime(by_version, data_dir=tmp_path / "v-data") as rt:
        await run_both(rt)
        listed = (await live(rt, "listing"))["a.csv"]
        version = fingerprint(listed)
        assert version.startswith(f"{listed['size']}:")
        ids = await live(rt, "ingest")
        assert sorted(ids) == [f"1@{version}", f"2@{version}"]
        assert all(e["source_file"] == {"path": "a.csv", "version": version} for e in ids.values())


@LOCAL
async def test_file_property_renamed(tmp_path: Path, backend: Backend) -> None:
    backend.put("a.csv", csv_rows([1]).encode())
    async with Runtime(config(tmp_path, backend, files={"file_property": "origin"}), data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        entity = (await live(rt, "ingest"))["1"]
        listed = (await live(rt, "listing"))["a.csv"]
        assert entity["origin"] == {"path": "a.csv", "version": fingerprint(listed)}
        assert "source_file" not in entity


@LOCAL_SFTP
@pytest.mark.parametrize(("files", "left"), [({}, ["1"]), ({"file_property": None}, ["1", "2"])],
                         ids=["default", "null"])
async def test_file_property_null_no_per_file_deletion(tmp_path: Path, backend: Backend, files: dict[str, Any],
                                                       left: list[str]) -> None:
    """Per-file deletion tracking needs ``file_property``: with the default, a row missing from a
    new version of the file is deleted; with null, entities carry no file property and that row
    stays (``_previous_ids`` finds nothing)."""
    backend.put("a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    async with Runtime(config(tmp_path, backend, files=files), data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        first = await live(rt, "ingest")
        assert sorted(first) == ["1", "2"]
        assert ("source_file" in first["1"]) is ("file_property" not in files)
        backend.put("a.csv", csv_rows([1], prefix="w").encode(), mtime=1_700_000_100)
        _, fr = await run_both(rt)
        assert fr.status == "completed" and fr.units is not None and fr.units["done"] == 1, fr.error
        after = await live(rt, "ingest")
        assert sorted(after) == left and after["1"]["value"] == "w1"


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_s3_counter_counts_downloads(tmp_path: Path, backend: Backend) -> None:
    """moto counts one object GET per downloaded file, none for the listing, none for a run with
    nothing changed."""
    for i in range(3):
        backend.put(f"f{i}.csv", csv_rows([i]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        start = backend.downloads()
        lr = await rt.run_pipe("listing")
        assert lr.status == "completed" and backend.downloads() == start, lr.error
        fr = await rt.run_pipe("ingest")
        assert fr.status == "completed" and fr.units is not None and fr.units["done"] == 3, fr.error
        assert backend.downloads() - start == 3
        assert sorted(await live(rt, "ingest")) == ["0", "1", "2"]
        lr, fr = await run_both(rt)
        assert lr.status == fr.status == "completed" and fr.units is not None and fr.units["done"] == 0
        assert backend.downloads() - start == 3
