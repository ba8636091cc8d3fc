"""The rest source against our fault-injection API: every paging type, since, auth, faults."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rest.conftest import collect_pipe, ids, runtime, system, truth
from tests.servers.faulty_api import FaultyApi

PAGINGS: dict[str, dict[str, Any]] = {
    "page": {"url": "/items/page", "payload_property": "data",
             "paging": {"type": "page", "page_size": 7, "size_param": "per_page",
                        "total_path": "total"}},
    "offset": {"url": "/items/offset", "payload_property": "data",
               "paging": {"type": "offset", "page_size": 7, "size_param": "limit"}},
    "cursor_body": {"url": "/items/cursor", "payload_property": "data",
                    "paging": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "after",
                               "page_size": 7, "size_param": "limit"}},
    "cursor_header": {"url": "/items/token", "payload_property": "data",
                      "paging": {"type": "cursor", "cursor_header": "X-Next-Token", "cursor_param": "token"}},
    "link_header": {"url": "/items/link", "params": {"per_page": "7"}, "payload_property": "",
                    "paging": {"type": "link_header"}},
    "next_link_body": {"url": "/items/next", "params": {"per_page": "7"}, "payload_property": "data",
                       "paging": {"type": "next_link", "next_link_path": "links.next"}},
}


@pytest.mark.parametrize("kind", sorted(PAGINGS))
async def test_every_paging_type_reads_everything(api: FaultyApi, write_config, tmp_path, kind: str) -> None:
    for n in range(25, 60):
        api.upsert(f"i{n:02}", name=f"item {n}", value=n)
    cfg = write_config([system(api.url), collect_pipe(**PAGINGS[kind])])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.ok, result.error
        got = await ids(rt, "items")
    assert set(got) == set(truth(api))
    assert got["i42"]["name"] == "item 42"


async def test_since_in_query_reads_only_changes(api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(api.url), collect_pipe(
        supports_since=True, is_chronological=True, updated_expression="{{ updated }}")])
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).read == 25
        assert (await rt.pipe_state("items")).since == 25
        api.upsert("i03", name="renamed", value=3)
        api.upsert("new", name="new", value=99)
        before = len(api.requests)
        second = await rt.run_pipe("items")
        assert second.ok and second.read == 2 and not second.full
        assert "since=25" in api.requests[before]
        got = await ids(rt, "items")
    assert got["i03"]["name"] == "renamed" and "new" in got


async def test_since_in_header_and_initial_value(api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(api.url), collect_pipe(
        supports_since=True, is_since_comparable=True, is_chronological=False,
        since_property_name="X-Since", since_property_location="header",
        initial_since_value=20, updated_expression="{{ updated }}")])
    async with runtime(cfg, tmp_path) as rt:
        first = await rt.run_pipe("items")
        assert first.ok and first.read == 5  # updated 21..25
        assert (await rt.pipe_state("items")).since == 25


async def test_since_as_template_variable(api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(api.url), collect_pipe(
        url="/items/page?since={{ since if since is not none else 0 }}",
        supports_since=True, since_property_location="template", updated_expression="{{ updated }}")])
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).read == 25
        api.upsert("i01", name="x", value=1)
        assert (await rt.run_pipe("items")).read == 1


@pytest.mark.parametrize("fault", [
    {"status": 500}, {"status": 503}, {"status": 429, "retry_after": "0"},
    {"reset": True}, {"cut": True}, {"delay": 1.5},
])
async def test_transient_faults_are_retried(api: FaultyApi, write_config, tmp_path, fault) -> None:
    api.faults.extend([{**fault, "path": "/items"}, {**fault, "path": "/items"}])
    cfg = write_config([system(api.url, read_timeout=0.5), collect_pipe()])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.ok, result.error
        assert set(await ids(rt, "items")) == set(truth(api))
    assert not api.faults


async def test_retry_after_is_honoured(api: FaultyApi, write_config, tmp_path) -> None:
    import time

    api.faults.append({"status": 429, "retry_after": "1", "path": "/items"})
    cfg = write_config([system(api.url), collect_pipe()])
    async with runtime(cfg, tmp_path) as rt:
        started = time.monotonic()
        assert (await rt.run_pipe("items")).ok
        assert time.monotonic() - started >= 0.9  # waited as told, not the 0.01 s backoff


async def test_exhausted_retries_fail_and_the_next_run_recovers(api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(api.url), collect_pipe()])
    async with runtime(cfg, tmp_path) as rt:
        api.faults.extend([{"status": 503, "path": "/items"}] * 4)
        failed = await rt.run_pipe("items")
        assert failed.status == "failed"
        assert "HTTP 503 after 4 attempt(s)" in str(failed.error) and "/items/page" in str(failed.error)
        ok = await rt.run_pipe("items")
        assert ok.ok and set(await ids(rt, "items")) == set(truth(api))


async def test_basic_and_api_key_auth(api: FaultyApi, write_config, tmp_path) -> None:
    api.auth = "basic"
    auth = {"type": "basic", "username": "client-1", "password": "$SECRET(API_PW)"}
    cfg = write_config([system(api.url, auth=auth), collect_pipe()])
    import os

    os.environ["API_PW"] = "s3cret"
    try:
        async with runtime(cfg, tmp_path) as rt:
            assert (await rt.run_pipe("items")).ok
        api.auth = "api_key"
        auth = {"type": "api_key", "name": "api_key", "value": "$SECRET(API_PW)", "location": "query"}
        cfg = write_config([system(api.url, auth=auth), collect_pipe()])
        api.faults.append({"status": 400, "path": "/items"})
        async with runtime(cfg, tmp_path) as rt:
            failed = await rt.run_pipe("items")
            assert "api_key=***" in str(failed.error) and "s3cret" not in str(failed.error)
            assert (await rt.run_pipe("items")).ok
    finally:
        del os.environ["API_PW"]


async def test_oauth2_tokens_expire_and_are_refreshed(api: FaultyApi, write_config, tmp_path) -> None:
    import os

    api.auth = "oauth"
    api.token_max_uses = 2  # the server expires each token after two requests
    auth = {"type": "oauth2", "token_url": "/oauth/token", "client_id": "client-1",
            "client_secret": "$SECRET(API_CS)", "refresh_window": 0}
    os.environ["API_CS"] = "s3cret"
    try:
        cfg = write_config([system(api.url, auth=auth), collect_pipe()])
        async with runtime(cfg, tmp_path) as rt:
            result = await rt.run_pipe("items")
            assert result.ok, result.error
            assert api.token_requests == 2  # 3 pages: the token expired after 2, one 401, renewed
            assert set(await ids(rt, "items")) == set(truth(api))
        api.token_max_uses = None
        refresh = {**auth, "grant_type": "refresh_token", "refresh_token": "$SECRET(API_RT)"}
        os.environ["API_RT"] = "refresh-0"
        cfg = write_config([system(api.url, auth=refresh), collect_pipe()])
        async with runtime(cfg, tmp_path) as rt:
            api.tokens.clear()
            assert (await rt.run_pipe("items")).ok
            api.tokens.clear()  # the server forgets the token: 401, then a refresh with the rotated token
            assert (await rt.run_pipe("items")).ok
    finally:
        os.environ.pop("API_CS", None)
        os.environ.pop("API_RT", None)
