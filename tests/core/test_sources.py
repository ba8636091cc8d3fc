"""Built-in sources: file formats, id options and bad input; dataset source history."""

from __future__ import annotations

import orjson
import pytest

from runtime import ConfigError, Runtime
from runtime.config import load_config
from runtime.plugins import default_registry
from tests.core.helpers import dataset_pipe


async def run_one(tmp_path, write_config, source: dict, **pipe):
    cfg = write_config([{"_id": "p", "type": "pipe", "source": source, **pipe}])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        result = await rt.run_pipe("p")
        return result, await rt.entities("p", limit=1000)


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "config" / "data"
    folder.mkdir(parents=True)
    return folder


async def test_csv_with_composite_primary_key(tmp_path, write_config, data):
    (data / "x.csv").write_text("country;code;name\nNO;03;Oslo\nSE;AB;Stockholm\n")
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.csv", "delimiter": ";", "primary_key": ["country", "code"]})
    assert result.ok and sorted(e["_id"] for e in got) == ["NO:03", "SE:AB"]
    assert next(e for e in got if e["_id"] == "NO:03")["name"] == "Oslo"


async def test_csv_row_with_extra_fields_names_the_line(tmp_path, write_config, data):
    (data / "x.csv").write_text("a,b\n1,2\n3,4,5\n")
    result, got = await run_one(tmp_path, write_config, {"type": "file", "path": "data/x.csv", "primary_key": "a"})
    assert result.status == "failed" and "x.csv:3" in str(result.error) and "the header has 2" in str(result.error)
    assert got == []


@pytest.mark.parametrize(("content", "line", "found"), [
    (b"a,b\n1,2\n3\n5,6\n", 3, "row has 1 field, the header has 2; set missing_fields: null"),
    (b"a,b,c\n1,2\n", 2, "row has 2 fields, the header has 3"),
])
async def test_csv_row_with_missing_fields_names_the_line(tmp_path, write_config, data, content, line, found):
    (data / "x.csv").write_bytes(content)
    result, got = await run_one(tmp_path, write_config, {"type": "file", "path": "data/x.csv", "primary_key": "a"})
    assert result.status == "failed" and found in str(result.error)
    assert f"{data / 'x.csv'}:{line}" in str(result.error)
    assert got == []


async def test_csv_missing_fields_null_reads_them_as_null(tmp_path, write_config, data):
    (data / "x.csv").write_text("a,b,c\n1,2\n3,,\n")
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.csv", "primary_key": "a", "missing_fields": "null"})
    assert result.ok and [(e["_id"], e["b"], e["c"]) for e in got] == [("1", "2", None), ("3", "", "")]


async def test_csv_without_header_typed_columns(tmp_path, write_config, data):
    """The ``file`` source takes the CSV keys of the ``files`` source (tests/files/test_csv_keys.py)."""
    (data / "x.csv").write_text("NO,5,true\nSE,,0\n")
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.csv", "primary_key": "country", "has_header": False,
        "field_names": ["country", "stores", "open"], "column_types": {"stores": "integer", "open": "boolean"}})
    assert result.ok, result.error
    assert {e["_id"]: (e["stores"], e["open"]) for e in got} == {"NO": (5, True), "SE": (None, False)}


async def test_csv_header_not_the_field_names_fails_the_run(tmp_path, write_config, data):
    (data / "x.csv").write_text("code,country\n5,NO\n")
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.csv", "primary_key": "country", "field_names": ["country", "code"]})
    assert result.status == "failed" and f"{data / 'x.csv'}:1" in str(result.error)
    assert "the header is ['code', 'country'], field_names expects ['country', 'code']" in str(result.error)
    assert got == []


def test_missing_fields_applies_only_to_csv(tmp_path, write_config):
    cfg = write_config([{"_id": "p", "type": "pipe",
                         "source": {"type": "file", "path": "x.json", "missing_fields": "null"}}])
    with pytest.raises(ConfigError, match=r"p: source: .*missing_fields applies only to format csv"):
        load_config(cfg, default_registry())


async def test_json_array_with_payload_property_and_id_expression(tmp_path, write_config, data):
    doc = {"meta": {}, "items": [{"a": 1, "b": "x"}, {"a": 2, "b": "y", "f": 1.5}]}
    (data / "x.json").write_bytes(orjson.dumps(doc))
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.json", "payload_property": "items", "id_expression": "{{ b }}-{{ a }}"})
    assert result.ok and sorted(e["_id"] for e in got) == ["x-1", "y-2"]
    assert next(e for e in got if e["_id"] == "y-2")["f"] == 1.5


async def test_json_wrong_payload_property_fails_the_run(tmp_path, write_config, data):
    (data / "x.json").write_bytes(orjson.dumps({"items": []}))
    result, _ = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.json", "payload_property": "itemz", "primary_key": "a"})
    assert result.status == "failed" and "x.json" in str(result.error)
    assert "expected a JSON array at payload_property 'itemz', found nothing (no such key)" in str(result.error)


@pytest.mark.parametrize(("doc", "ok"), [
    ({"a": {"b": []}}, True),
    ({"a": {"b": [{"k": 1}]}}, True),
    ({"a": {"b": {"k": 1}}}, "found an object with keys k"),
    ({"a": {"b": "x"}}, "found a string"),
    ({"a": {"c": []}}, "found nothing (no such key)"),
    ({"a": {"b": {"item": {"k": 1}}}}, "found an object with keys item"),  # ijson's prefix a.b.item
])
async def test_json_dotted_payload_property(tmp_path, write_config, data, doc, ok):
    (data / "x.json").write_bytes(orjson.dumps(doc))
    result, got = await run_one(tmp_path, write_config, {
        "type": "file", "path": "data/x.json", "payload_property": "a.b", "primary_key": "k"})
    assert result.ok is (ok is True), result.error
    assert ok is True or f"expected a JSON array at payload_property 'a.b', {ok}" in str(result.error)
    assert len(got) == (1 if doc == {"a": {"b": [{"k": 1}]}} else 0)


@pytest.mark.parametrize(("doc", "found"), [
    ({"_id": "x"}, "an object with keys _id"),
    ({"item": {"_id": "x"}}, "an object with keys item"),  # ijson's prefix for array items
    ({f"k{i}": i for i in range(7)}, "an object with keys k0, k1, k2, k3, k4, ..."),
    ({}, "an empty object"),
    ("x", "a string"),
])
async def test_json_top_level_not_an_array_fails_and_deletes_nothing(tmp_path, write_config, data, doc, found):
    """A full run over a file of the wrong shape read zero records and deleted the dataset."""
    (data / "x.json").write_bytes(orjson.dumps([{"_id": "x"}, {"_id": "y"}]))
    cfg = write_config([{"_id": "p", "type": "pipe", "source": {"type": "file", "path": "data/x.json"}}])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        assert (await rt.run_pipe("p")).new == 2
        (data / "x.json").write_bytes(orjson.dumps(doc))
        result = await rt.run_pipe("p")
        assert result.status == "failed" and (result.read, result.deleted) == (0, 0)
        assert f"expected a JSON array at the top level, found {found}" in str(result.error)
        assert str(data / "x.json") in str(result.error)
        assert sorted((e["_id"], e.get("_deleted", False)) for e in await rt.entities("p")) == [
            ("x", False), ("y", False)]


async def test_truncated_json_fails_the_run_naming_the_record(tmp_path, write_config, data):
    (data / "x.json").write_text('[{"_id": "a"}, {"_id": "b"}, {"_id": ')
    result, got = await run_one(tmp_path, write_config, {"type": "file", "path": "data/x.json"}, batch_size=1)
    assert result.status == "failed" and "not valid JSON after record 2" in str(result.error)
    # the complete records before the cut may be written; nothing is deleted or marked complete
    assert {e["_id"] for e in got} <= {"a", "b"} and not any(e.get("_deleted") for e in got)


async def test_ndjson_bad_line_and_missing_id(tmp_path, write_config, data):
    (data / "x.ndjson").write_text('{"_id": "a"}\n\n{oops\n')
    result, _ = await run_one(tmp_path, write_config, {"type": "file", "path": "data/x.ndjson"})
    assert result.status == "failed" and "x.ndjson:3" in str(result.error) and "not valid JSON" in str(result.error)
    (data / "y.ndjson").write_text('{"name": "no id"}\n')
    result, _ = await run_one(tmp_path, write_config, {"type": "file", "path": "data/y.ndjson"})
    assert "no string _id; set primary_key or id_expression" in str(result.error)


async def test_embedded_source_and_null_sink(tmp_path, write_config):
    result, got = await run_one(tmp_path, write_config, {"type": "embedded", "entities": [{"_id": "a"}]},
                                sink={"type": "null"})
    assert result.ok and result.read == 1 and result.changes == 0 and got == []


async def test_dataset_source_include_previous_versions(tmp_path, write_config):
    cfg = write_config([
        {"_id": "src", "type": "pipe", "source": {"type": "embedded", "entities": [{"_id": "a", "v": 1}]},
         "compaction": {"keep_versions": None}},
        dataset_pipe("hist", "src", compaction={"keep_versions": None},
                     source={"type": "dataset", "dataset": "src", "include_previous_versions": True},
                     transform={"type": "python", "function": "versioned:per_version"}),
    ])
    (cfg / "versioned.py").write_text(
        "def per_version(es):\n    return [{**e, '_id': f\"{e['_id']}@{e['_updated']}\"} for e in es]\n")
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_all()
        (cfg / "pipes.yaml").write_text((cfg / "pipes.yaml").read_text().replace("v: 1", "v: 2"))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_pipe("src")
        await rt.reset_pipe("hist")
        await rt.run_pipe("hist")
        assert sorted(e["_id"] for e in await rt.entities("hist")) == ["a@0", "a@1"]
        assert [e["v"] for e in await rt.entity("src", "a", history=True)] == [1, 2]
