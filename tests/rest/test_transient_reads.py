"""Transient read faults are retried, not fatal (issue 8, item 2): a 200 whose body is truncated
or not parseable is retried on an idempotent request under the system's retry policy, and a 401
right after a token refresh gets another refresh within the same attempt budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runtime import BadDataError, FatalError
from tests.rest.conftest import collect_pipe, ids, runtime, system, truth
from tests.servers.faulty_api import FaultyApi

UNPARSEABLE = [{"truncate": True}, {"html": True}, {"body": "", "content_type": "application/json"},
               {"body": '{"data": [', "content_type": "application/json"}]
OAUTH = {"type": "oauth2", "token_url": "/oauth/token", "client_id": "client-1",
         "client_secret": "$SECRET(FAULTY_CS)"}


@pytest.fixture
def oauth_api(api: FaultyApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyApi]:
    api.auth = "oauth"
    monkeypatch.setenv("FAULTY_CS", "s3cret")
    yield api


def lookup(**transform: Any) -> dict[str, Any]:
    """A pipe calling ``GET /items/{id}`` for i01 and i02."""
    return {"_id": "details", "type": "pipe",
            "source": {"type": "embedded", "entities": [{"_id": "a", "id": "i01"}, {"_id": "b", "id": "i02"}]},
            "transform": {"type": "rest", "system": "api", "url": "/items/{{ entity.id }}", "concurrency": 1,
                          **transform}}


@pytest.mark.parametrize("fault", UNPARSEABLE)
async def test_unparseable_200_page_is_retried(api: FaultyApi, write_config, tmp_path, fault) -> None:
    cfg = write_config([system(api.url), collect_pipe()])
    api.faults.extend([{**fault, "path": "/items", "query": "page=2"}] * 3)  # 3 of the 4 attempts
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
        assert result.ok, result.error
        assert set(await ids(rt, "items")) == set(truth(api))
    assert not api.faults


async def test_unparseable_200_fails_naming_the_request_once_attempts_are_spent(
    api: FaultyApi, write_config, tmp_path
) -> None:
    cfg = write_config([system(api.url), collect_pipe()])
    api.faults.extend([{"truncate": True, "path": "/items", "query": "page=2"}] * 4)
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("items")
    assert isinstance(result.error, BadDataError)
    message = str(result.error)
    assert "may be truncated" in message and "after 4 attempt(s)" in message
    assert "GET http://127.0.0.1" in message and "/items/page?" in message and "page=2" in message


@pytest.mark.parametrize("replace_entity", [False, True])
async def test_truncated_200_in_the_transform_is_retried(api: FaultyApi, write_config, tmp_path,
                                                         replace_entity: bool) -> None:
    pipe = lookup(replace_entity=replace_entity, id_expression="{{ id }}")
    cfg = write_config([system(api.url), pipe])
    api.faults.extend([{"truncate": True, "path": "/items/i02"}] * 2)
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("details")
        assert result.ok, result.error
        got = await ids(rt, "details")
    if replace_entity:
        assert {k: v["name"] for k, v in got.items()} == {"i01": "item 1", "i02": "item 2"}
    else:
        assert got["b"]["response"] == api.items["i02"]
    assert not api.faults


async def test_truncated_reply_to_a_post_is_not_retried(api: FaultyApi, write_config, tmp_path) -> None:
    pipe = lookup(method="POST", url="/writes", payload={"id": "{{ entity.id }}"}, side_effects=False)
    cfg = write_config([system(api.url), pipe])
    api.faults.append({"truncate": True, "path": "/writes"})
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("details")
    assert isinstance(result.error, BadDataError) and "POST http://127.0.0.1" in str(result.error)
    assert api.writes == [{"id": "i01"}]  # the server acted once; not repeated


async def test_401_right_after_a_refresh_is_refreshed_again(oauth_api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(oauth_api.url, auth=OAUTH), lookup()])
    oauth_api.faults.extend([{"expired": True, "path": "/items/i01"}] * 3)
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("details")
        assert result.ok, result.error
        assert (await ids(rt, "details"))["a"]["response"] == oauth_api.items["i01"]
    assert oauth_api.token_requests == 4  # the first token, then one per 401


async def test_401s_stop_when_the_attempts_are_spent(oauth_api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(oauth_api.url, auth=OAUTH), lookup()])
    oauth_api.faults.extend([{"expired": True, "path": "/items/i01"}] * 10)
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("details")
    assert isinstance(result.error, FatalError)
    assert "HTTP 401 after 5 attempt(s) from GET http://127.0.0.1" in str(result.error)
    assert oauth_api.token_requests == 5 and len(oauth_api.faults) == 5
