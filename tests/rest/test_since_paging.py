"""Paging type ``since``: each next page is asked for after the ``_updated`` of the last entity
received (how a Sesam JSON pull client pages a publisher), unit-tested and against the delta
stream ``/changes`` of our fault-injection API."""

from __future__ import annotations

import pytest

from connectors.rest.models import PagingConfig
from connectors.rest.paging import PageResponse, make_paginator
from runtime import BadDataError
from tests.rest.conftest import runtime, system
from tests.servers.faulty_api import FaultyApi


def test_since_paginator_sends_the_last_updated() -> None:
    p = make_paginator(PagingConfig(type="since", page_size=3, size_param="limit"), "http://h/x")
    assert p.first().params == {"limit": "3"}
    nxt = p.next(PageResponse("http://h/x", {}, [], 3, "GET http://h/x", 17))
    assert nxt is not None and nxt.params == {"limit": "3", "since": "17"}
    # a short page does not end paging by default (a server may cap the page size) ...
    assert p.next(PageResponse("http://h/x", {}, [], 2, "GET http://h/x", 19)).params == {"limit": "3", "since": "19"}
    # ... unless short_page is asked for
    p = make_paginator(PagingConfig(type="since", page_size=3, size_param="limit",
                                    stop_on=["empty_page", "short_page"]), "http://h/x")
    p.first()
    assert p.next(PageResponse("http://h/x", {}, [], 2, "GET http://h/x", 19)) is None
    p = make_paginator(PagingConfig(type="since", since_param="after"), "u")
    p.first()
    assert p.next(PageResponse("u", {}, [], 5, "GET u", "2024-01-01")).params == {"after": "2024-01-01"}
    assert p.next(PageResponse("u", {}, [], 0, "GET u", None)) is None  # empty page


def test_since_paging_needs_updated() -> None:
    p = make_paginator(PagingConfig(type="since"), "u")
    p.first()
    with pytest.raises(BadDataError, match="updated_expression"):
        p.next(PageResponse("u", {}, [], 4, "GET u", None))


def changes_pipe() -> dict:
    return {"_id": "changes", "type": "pipe", "batch_size": 4, "source": {
        "type": "rest", "system": "api", "url": "/changes", "payload_property": "data",
        "id_expression": "{{ id }}", "updated_expression": "{{ updated }}",
        "deleted_expression": "{{ deleted | default(false) }}", "supports_since": True,
        "paging": {"type": "since", "page_size": 4, "size_param": "limit"}}}


async def test_delta_stream_read_page_by_page_and_incrementally(api: FaultyApi, write_config, tmp_path) -> None:
    cfg = write_config([system(api.url), changes_pipe()])
    async with runtime(cfg, tmp_path) as rt:
        first = await rt.run_pipe("changes")
        assert first.ok and first.read == 25, first
        assert len(api.requests) == 8  # 6 full pages of 4, a short page of 1, then the empty page that ends it
        api.upsert("i03", name="changed", value=3)
        api.delete("i04")
        api.upsert("i99", name="new", value=99)
        api.requests.clear()
        second = await rt.run_pipe("changes")
        assert second.ok and second.read == 3 and second.deleted == 1, second
        assert api.requests == ["/changes?since=25&limit=4", "/changes?since=28&limit=4"]
        latest = {e["_id"]: e for e in await rt.entities("changes", limit=1000)}
        assert latest["i04"]["_deleted"] and latest["i03"]["name"] == "changed" and "i99" in latest
