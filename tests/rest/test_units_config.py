"""The ``work_units`` key of the ``rest`` source: what the config refuses (keys that mean nothing
over work units, a paging that may cut a unit short), the unit's variables in the record
templates, its planning input among the datasets the pipe reads, and a watermark that cannot be
ordered failing only its unit. Against the survey API on 127.0.0.1 where a server is needed."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.rest.source import RestSource
from runtime import load_config
from runtime.errors import ConfigError
from runtime.plugins import default_registry
from tests.rest.conftest import ids, runtime, system
from tests.rest.survey_units import WEEKS, survey_config
from tests.servers.survey_api import SurveyApi, serve


def problems(cfg: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(cfg, default_registry())
    return [(p.key, p.reason) for p in caught.value.problems]


def with_source(base_url: str, **source: Any) -> list[dict[str, Any]]:
    config = survey_config(base_url, {"windows": WEEKS})
    config[2]["source"].update(source)
    return config


@pytest.mark.parametrize(("key", "value", "says"), [
    ("initial_since_value", "2024-01-01", "initial_since_value does not apply with work_units"),
    ("is_chronological", False, "is_chronological do not apply with work_units"),
    ("is_since_comparable", True, "is_since_comparable do not apply with work_units"),
])
def test_keys_that_mean_nothing_over_work_units_are_refused(write_config, key, value, says) -> None:
    found = problems(write_config(with_source("http://127.0.0.1:9", **{key: value})))
    assert len(found) == 1 and found[0][0] == "source" and says in found[0][1]


def test_a_paging_that_stops_at_max_pages_is_refused_inline_and_in_the_operation(write_config) -> None:
    stop = {"type": "page", "max_pages": 2, "on_max_pages": "stop"}
    found = problems(write_config(with_source("http://127.0.0.1:9", paging=stop)))
    assert [k for k, _ in found] == ["source.paging.on_max_pages"] and "would count as done" in found[0][1]
    config = with_source("http://127.0.0.1:9")
    config[0]["operations"]["list-responses"]["paging"] = stop
    found = problems(write_config(config))
    assert [k for k, _ in found] == ["source.operation"] and "use on_max_pages: fail" in found[0][1]


def test_the_planning_dataset_is_read_by_the_pipe(write_config) -> None:
    config = load_config(write_config(survey_config("http://127.0.0.1:9", {"windows": WEEKS})), default_registry())
    source = config.pipes["responses"].source
    assert source.cls is RestSource and source.cls.datasets_read(source.config) == ["surveys"]


async def test_record_templates_see_the_unit_and_its_key(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=2, responses=4, weeks=1)
    async with serve(api):
        config = with_source(api.url, id_expression="{{ unit.name }}:{{ id }}",
                             deleted_expression="{{ unit_key.startswith('s2|') and score > 5 }}",
                             work_units={"dataset": "surveys", "windows": {**WEEKS, "end": "2024-01-08"}})
        async with runtime(write_config(config), tmp_path) as rt:
            await rt.run_pipe("surveys")
            result = await rt.run_pipe("responses")
            assert result.units["done"] == 2
            live = await ids(rt, "responses")
            assert any(r["score"] > 5 for r in api.window("s2"))
            assert set(live) == ({f"Survey 1:{r['id']}" for r in api.window("s1")}
                                 | {f"Survey 2:{r['id']}" for r in api.window("s2") if r["score"] <= 5})


async def test_updated_values_that_cannot_be_ordered_fail_their_unit_alone(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=2, responses=6, weeks=1)
    async with serve(api):
        mixed = "{{ score if survey_id == 's2' and score > 5 else submitted }}"  # numbers among datetimes
        config = with_source(api.url, updated_expression=mixed,
                             work_units={"dataset": "surveys", "windows": {**WEEKS, "end": "2024-01-08"},
                                         "retry_backoff_s": 3600})
        async with runtime(write_config(config), tmp_path) as rt:
            await rt.run_pipe("surveys")
            assert any(r["score"] > 5 for r in api.window("s2"))
            result = await rt.run_pipe("responses")
            assert (result.status, result.units["done"], result.units["failed"]) == ("completed", 1, 1)
            failed = {u.key: u for u in await rt.store.work_units("responses", status="failed")}
            assert list(failed) == ["s2|2024-01-01T00:00:00Z"]
            assert "cannot be ordered" in (failed["s2|2024-01-01T00:00:00Z"].last_error or "")


async def test_header_templates_see_the_unit_and_since_is_its_integer_watermark(api, write_config, tmp_path) -> None:
    # our fault-injection API's /items/page answers the items updated after the X-Since header
    source = {"type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
              "id_expression": "{{ id }}", "updated_expression": "{{ updated }}",
              "headers": {"X-Since": "{{ since if since is not none else unit.after }}"},
              "paging": {"type": "page", "page_size": 2, "size_param": "per_page", "total_path": "total"},
              "work_units": {"values": [{"after": "20"}]}}
    cfg = write_config([system(api.url), {"_id": "late", "type": "pipe", "source": source}])
    async with runtime(cfg, tmp_path) as rt:
        first = await rt.run_pipe("late")
        assert set(await ids(rt, "late")) == {"i20", "i21", "i22", "i23", "i24"}  # updated 21..25
        assert (first.read, (await rt.store.work_units("late"))[0].watermark) == (5, 25)
        api.upsert("i99", name="new", value=99)
        second = await rt.run_pipe("late")  # a values unit is read again, from its watermark
        assert (second.read, second.new) == (1, 1)
        assert (await rt.store.work_units("late"))[0].watermark == 26


async def test_a_template_naming_a_variable_the_units_lack_fails_each_unit_naming_it(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=1, responses=2, weeks=1)
    async with serve(api):
        config = with_source(api.url, url="/surveys/{{ unit.survey_id }}/responses",
                             work_units={"dataset": "surveys", "windows": {**WEEKS, "end": "2024-01-08"},
                                         "retry_backoff_s": 3600})
        async with runtime(write_config(config), tmp_path) as rt:  # unknown variables load fine
            await rt.run_pipe("surveys")
            result = await rt.run_pipe("responses")
            assert (result.status, result.units["failed"]) == ("completed", 1)
            error = (await rt.store.work_units("responses"))[0].last_error or ""
            assert "survey_id" in error and "unit 's1|2024-01-01T00:00:00Z'" in error and "pipe 'responses'" in error
