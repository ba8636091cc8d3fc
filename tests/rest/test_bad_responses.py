"""Bad responses fail the run naming the request; batches before the bad page stay committed,
nothing after it is, and the next run resumes from the last good checkpoint."""

from __future__ import annotations

import pytest

from runtime import BadDataError
from tests.rest.conftest import collect_pipe, ids, runtime, system, truth
from tests.servers.faulty_api import FaultyApi

SINCE = {"supports_since": True, "is_chronological": True, "updated_expression": "{{ updated }}"}


@pytest.mark.parametrize(("fault", "times", "message"), [
    # a body that does not parse is retried (the connection rule: 4 attempts here) before it fails
    ({"body": "all good", "content_type": "text/plain"}, 4, "not valid JSON"),
    ({"html": True}, 4, "HTML page (status 200)"),
    ({"truncate": True}, 4, "may be truncated"),
    ({"body": '{"rows": []}', "content_type": "application/json"}, 1,
     "payload_property 'data' is not in the response"),
    ({"body": '{"data": [{"name": "no id"}]}', "content_type": "application/json"}, 1, "id_expression"),
    ({"body": '{"data": [3, 4]}', "content_type": "application/json"}, 1, "expected a list of objects"),
])
async def test_bad_page_fails_run_and_next_run_resumes(
    api: FaultyApi, write_config, tmp_path, fault, times, message
) -> None:
    cfg = write_config([system(api.url), collect_pipe(**SINCE)])
    api.faults.extend([{**fault, "path": "/items", "query": "page=3"}] * times)  # pages 1 and 2 are fine
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.status == "failed"
        assert isinstance(result.error, BadDataError)
        assert message in str(result.error)
        assert "GET http://127.0.0.1" in str(result.error) and "/items/page" in str(result.error)
        assert "page=3" in str(result.error)
        since = (await rt.pipe_state("items")).since
        committed = await ids(rt, "items")
        # exactly what the last committed checkpoint covers: nothing of page 3, nothing past since
        assert set(committed) == {k for k, v in api.items.items() if since is not None and v["updated"] <= since}
        assert since in (None, 10, 20)
        retry = await rt.run_pipe("items")
        assert retry.ok, retry.error
        assert set(await ids(rt, "items")) == set(truth(api))


async def test_record_without_id_and_no_id_expression(api: FaultyApi, write_config, tmp_path) -> None:
    pipe = collect_pipe()
    del pipe["source"]["id_expression"]
    cfg = write_config([system(api.url), pipe])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert isinstance(result.error, BadDataError) and "has no string _id" in str(result.error)
        assert await ids(rt, "items") == {}


@pytest.mark.parametrize(("url", "paging", "message"), [
    ("/broken/same", {"type": "page", "page_size": 10, "stop_on": ["empty_page"]}, "same page twice"),
    ("/broken/loop", {"type": "next_link", "next_link_path": "links.next"}, "paging loops"),
    ("/broken/cursor", {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "after"},
     "cursor did not advance"),
])
async def test_paging_safety_net(api: FaultyApi, write_config, tmp_path, url, paging, message) -> None:
    cfg = write_config([system(api.url), collect_pipe(url=url, paging=paging, params={"per_page": "10"})])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.status == "failed" and message in str(result.error)
        assert url in str(result.error)
        assert len(api.requests) < 10


async def test_max_pages_fails_unless_told_to_stop(api: FaultyApi, write_config, tmp_path) -> None:
    paging = {"type": "page", "page_size": 5, "size_param": "per_page", "max_pages": 2}
    cfg = write_config([system(api.url), collect_pipe(paging=paging)])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.status == "failed" and "max_pages 2" in str(result.error)
    cfg = write_config([system(api.url), collect_pipe(paging={**paging, "on_max_pages": "stop"})])
    async with runtime(cfg, tmp_path / "b") as rt:
        result = await rt.run_pipe("items")
        assert result.ok and result.read == 10
