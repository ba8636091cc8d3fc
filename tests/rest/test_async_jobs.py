"""Asynchronous ingestion (DIL): the ``rest`` source's ``job`` mode against our Salesforce Bulk 2.0
style API on 127.0.0.1 (:mod:`tests.servers.bulk_api`): create, poll, CSV chunks by locator,
cleanup; failed, forgotten and slow jobs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from runtime import Runtime, load_config
from runtime.errors import ConfigError
from runtime.plugins import default_registry
from tests.rest.async_jobs import job_config
from tests.rest.conftest import ids
from tests.servers.bulk_api import BulkApi, serve


@pytest.fixture
async def bulk() -> AsyncIterator[BulkApi]:
    """The bulk API with 2,500 rows in chunks of 1,000."""
    api = BulkApi(rows=2500, chunk=1000)
    async with serve(api):
        yield api


def truth(api: BulkApi) -> dict[str, dict[str, str]]:
    return {row["Id"]: row for row in api.truth()}


async def run(cfg: Path, tmp_path: Path, **kw: Any) -> Any:
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        result = await rt.run_pipe("accounts", **kw)
        return result, await ids(rt, "accounts"), await rt.store.work_units("accounts")


def strip(entities: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in e.items() if not f.startswith("_")} for k, e in entities.items()}


async def test_a_jobs_csv_chunks_land_in_the_dataset_as_strings(bulk, tmp_path, write_config):
    result, data, units = await run(write_config(job_config(bulk.url)), tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert strip(data) == truth(bulk)  # every column a string, as in the CSV
    assert data["001000000000000007"]["IsActive"] == "true"
    assert len(bulk.created) == 1
    chunks = [n for (job, _), n in bulk.locator_requests.items()]
    assert len(chunks) == 3 and set(chunks) == {1}  # three chunks, each asked for once
    assert bulk.jobs == {}  # cleanup deleted the job
    assert [(u.key, u.status) for u in units] == [("job", "done")]


async def test_a_failed_job_is_created_again_and_the_log_says_so(bulk, tmp_path, write_config):
    bulk.job_faults.append({"fail": "INVALID_FIELD"})
    with capture_logs() as logs:
        result, data, _ = await run(write_config(job_config(bulk.url)), tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert len(bulk.created) == 2 and bulk.created[0].state == "Failed"
    assert strip(data) == truth(bulk)
    again = [e for e in logs if e["event"] == "job.recreated"]
    assert len(again) == 1 and again[0]["job"] == bulk.created[0].id and "Failed" in again[0]["reason"]


async def test_a_job_the_server_forgot_is_created_again(bulk, tmp_path, write_config):
    bulk.job_faults.append({"forget_after_polls": 1})
    with capture_logs() as logs:
        result, data, _ = await run(write_config(job_config(bulk.url)), tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert len(bulk.created) == 2 and strip(data) == truth(bulk)
    again = [e for e in logs if e["event"] == "job.recreated"]
    assert len(again) == 1 and "404" in again[0]["reason"]


async def test_a_job_failing_twice_in_one_attempt_fails_its_unit_alone(bulk, tmp_path, write_config):
    bulk.job_faults += [{"fail": "one"}, {"fail": "two"}]
    result, data, units = await run(write_config(job_config(bulk.url)), tmp_path)
    assert result.ok and result.units["failed"] == 1 and data == {}
    assert len(bulk.created) == 2
    assert units[0].status == "failed" and "Failed" in units[0].last_error
    assert units[0].checkpoint["job"] == bulk.created[1].id  # the next attempt re-attaches it first


async def test_a_slow_job_leaves_its_unit_waiting_and_a_later_run_completes_it(bulk, tmp_path, write_config):
    bulk.ready_after_polls = 3
    cfg = write_config(job_config(bulk.url, max_wait_in_run_s=0, poll_interval_s=0.2))
    states = []
    for _ in range(3):  # created (first poll not due yet), then InProgress twice
        result, data, units = await run(cfg, tmp_path)
        assert result.ok and result.units["waiting"] == 1 and data == {}
        assert units[0].status == "waiting" and units[0].due_us is not None
        states.append(units[0].checkpoint["state"])
        await anyio.sleep(max(0.0, (units[0].due_us - time.time_ns() // 1000) / 1e6))  # until its poll is due
    assert states == ["created", "InProgress", "InProgress"]
    result, data, units = await run(cfg, tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert strip(data) == truth(bulk)
    assert len(bulk.created) == 1 and bulk.created[0].polls == 3  # re-attached, never created again


async def test_one_job_per_unit_with_the_units_variables_in_the_payload(bulk, tmp_path, write_config):
    objects = job_config(bulk.url, work_units={"values": ["a", "b"]})
    objects[1]["source"]["job"]["start"]["payload"]["query"] = "SELECT Id FROM Account -- {{ value }}"
    result, data, _ = await run(write_config(objects), tmp_path)
    assert result.ok and result.units["done"] == 2, result.error
    assert sorted(j.body["query"][-1] for j in bulk.created) == ["a", "b"]
    assert strip(data) == truth(bulk)


@pytest.mark.parametrize(("change", "message"), [
    ({"paging": {"type": "page"}}, r"job: results are read by locator"),
    ({"results": {"url": "/r", "locator_header": "L", "locator_path": "next", "format": "json"}},
     r"job\.results.*set locator_header or locator_path, not both"),
    ({"results": {"url": "/r", "locator_path": "next"}}, r"job\.results.*need format json"),
    ({"status": {"url": "/s"}}, r"job\.status\.ready_expression.*Field required"),
    ({"start": {"url": "/jobs", "id_expression": "{{ response.id"}}, r"job\.start\.id_expression.*syntax"),
])
def test_bad_job_keys_are_config_errors_naming_the_key(change, message, write_config):
    objects = job_config("http://127.0.0.1:9")
    source = objects[1]["source"]
    for key, value in change.items():
        (source if key == "paging" else source["job"])[key] = value
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(objects), default_registry())


async def test_each_later_run_asks_a_new_job_for_what_is_newer_than_the_units_watermark(bulk, tmp_path, write_config):
    objects = job_config(bulk.url)
    objects[1]["source"]["updated_expression"] = "{{ LastModifiedDate }}"
    objects[1]["source"]["job"]["start"]["payload"]["since"] = "{{ watermark or '' }}"
    cfg = write_config(objects)
    first, _, units = await run(cfg, tmp_path)
    assert first.new == 2500 and units[0].watermark == "2024-01-02T17:39:00.000+0000"  # row 2499's
    bulk.update(7, Name="renamed", LastModifiedDate="2024-01-03T00:00:00.000+0000")
    second, data, units = await run(cfg, tmp_path)
    assert (second.read, second.changed) == (1, 1), second.error
    assert [j.body["since"] for j in bulk.created] == ["", "2024-01-02T17:39:00.000+0000"]
    assert data["001000000000000007"]["Name"] == "renamed"
    assert units[0].watermark == "2024-01-03T00:00:00.000+0000"
    full, data, _ = await run(cfg, tmp_path, full=True)  # a full sweep reads everything again
    assert full.ok and full.read == 2500 and bulk.created[-1].body["since"] == ""


async def test_a_job_not_ready_within_its_timeout_is_created_again(bulk, tmp_path, write_config):
    bulk.job_faults.append({"polls": 10_000})  # the first job never completes
    with capture_logs() as logs:
        result, data, _ = await run(write_config(job_config(bulk.url, timeout_s=0.05)), tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert len(bulk.created) == 2 and strip(data) == truth(bulk)
    assert [e["reason"] for e in logs if e["event"] == "job.recreated"] == ["was not ready within timeout_s 0.05"]


async def test_a_csv_row_with_a_missing_field_fails_the_unit_naming_request_and_line(bulk, tmp_path, write_config):
    first = "/jobs/750000000000000001/results"
    bulk.faults.append({"path": first, "body": "Id,Name\n001a,one\n001b\n", "content_type": "text/csv"})
    result, data, units = await run(write_config(job_config(bulk.url)), tmp_path)
    assert result.ok and result.units["failed"] == 1 and data == {}
    assert "CSV line 3 has 1 fields, the header 2" in units[0].last_error
    assert f"GET {bulk.url}{first}" in units[0].last_error


async def test_json_results_paged_by_a_locator_in_the_body(bulk, tmp_path, write_config):
    objects = job_config(bulk.url)
    objects[1]["source"]["job"]["results"] = {"url": "/jobs/{{ job }}/results", "format": "json",
                                              "payload_property": "records", "locator_path": "next"}
    first = "/jobs/750000000000000001/results"
    bulk.faults += [
        {"path": first, "body": '{"records": [{"Id": "a"}, {"Id": "b"}], "next": "p2"}',
         "content_type": "application/json"},
        {"path": first, "query": "locator=p2", "body": '{"records": [{"Id": "c"}], "next": null}',
         "content_type": "application/json"}]
    result, data, _ = await run(write_config(objects), tmp_path)
    assert result.ok and result.units["done"] == 1, result.error
    assert sorted(data) == ["a", "b", "c"] and not bulk.faults


async def test_a_full_sweep_does_not_complete_with_an_incremental_job_still_waiting(bulk, tmp_path, write_config):
    objects = job_config(bulk.url)
    objects[1]["source"]["updated_expression"] = "{{ LastModifiedDate }}"
    objects[1]["source"]["job"]["start"]["payload"]["since"] = "{{ watermark or '' }}"
    assert (await run(write_config(objects), tmp_path))[0].new == 2500
    bulk.remove(3)
    objects[1]["source"]["job"]["status"].update(max_wait_in_run_s=0, poll_interval_s=0.2)
    _, _, units = await run(write_config(objects), tmp_path)  # its job asks since the watermark
    assert units[0].status == "waiting" and bulk.created[-1].body["since"] != ""
    await anyio.sleep(max(0.0, (units[0].due_us - time.time_ns() // 1000) / 1e6))  # until its poll is due
    objects[1]["source"]["job"]["status"].update(max_wait_in_run_s=30, poll_interval_s=0.01)
    with capture_logs() as logs:
        full, data, _ = await run(write_config(objects), tmp_path, full=True)
    assert full.ok and full.deleted == 1, full.error  # the row removed at the server, not 2,499 rows
    assert bulk.created[-1].body["since"] == "" and len(bulk.created) == 3
    assert strip(data) == truth(bulk)
    assert [e["reason"] for e in logs if e["event"] == "job.recreated"] == [
        "the full sweep needs a job without watermark"]
