"""The connector test kit runs against the built-in components."""

import pytest

from runtime.testing import check_sink, check_source


async def test_builtin_sources_conform(tmp_path):
    data = tmp_path / "a" / "config" / "data"
    data.mkdir(parents=True)
    (data / "x.csv").write_text("id,name\n1,a\n2,b\n")
    found = await check_source({"type": "file", "path": "data/x.csv", "primary_key": "id"}, tmp_path / "a")
    assert sorted(e["_id"] for e in found) == ["1", "2"]
    found = await check_source({"type": "embedded", "entities": [{"_id": "x"}]}, tmp_path / "b")
    assert [e["_id"] for e in found] == ["x"]


async def test_builtin_sinks_conform(tmp_path):
    first, second = await check_sink({"type": "dataset"}, [{"_id": "a"}, {"_id": "b"}], tmp_path / "a")
    assert (first.new, second.unchanged) == (2, 2)
    await check_sink({"type": "null"}, [{"_id": "a"}], tmp_path / "b")


async def test_a_broken_source_fails_the_check(tmp_path):
    data = tmp_path / "config" / "data"
    data.mkdir(parents=True)
    (data / "x.csv").write_text("id,name\n,a\n")
    with pytest.raises(AssertionError, match=r"source run failed: .*primary_key"):
        await check_source({"type": "file", "path": "data/x.csv", "primary_key": "id"}, tmp_path)
