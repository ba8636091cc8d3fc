"""Paginator state as a work unit's checkpoint carries it (JSON): a paginator restored from
:meth:`state` asks for the same next pages and runs the same announced-total check as one that
never stopped. No server: paginators do no I/O."""

from __future__ import annotations

import orjson
import pytest

from connectors.rest.models import PagingConfig
from connectors.rest.paging import PageRequest, PageResponse, make_paginator
from runtime import BadDataError


def resp(count: int, body=None) -> PageResponse:
    return PageResponse("http://h/x", {}, body if body is not None else {}, count, "GET http://h/x")


@pytest.mark.parametrize(("config", "bodies"), [
    (PagingConfig(type="page", page_size=2, size_param="n", total_path="total"), [{"total": 5}] * 3),
    (PagingConfig(type="offset", page_size=2, size_param="n", total_path="total"), [{"total": 5}] * 3),
    (PagingConfig(type="cursor", cursor_path="next"), [{"next": "a"}, {"next": "b"}, {}]),
    (PagingConfig(type="next_link", next_link_path="next"), [{"next": "/x?p=2"}, {"next": "/x?p=3"}, {}]),
])
def test_a_restored_paginator_continues_where_the_first_one_stopped(config, bodies) -> None:
    counts = [2, 2, 1]
    straight = make_paginator(config, "http://h/x")
    straight.first()
    expected = [straight.next(resp(c, b)) for c, b in zip(counts, bodies, strict=True)]
    first = make_paginator(config, "http://h/x")
    first.first()
    following = first.next(resp(counts[0], bodies[0]))
    assert following is not None
    saved = orjson.loads(orjson.dumps({"next": following.to_json(), "paging": first.state()}))
    resumed = make_paginator(config, "http://h/x")
    resumed.restore(saved["paging"])
    assert PageRequest.from_json(saved["next"]) == expected[0]
    assert [resumed.next(resp(c, b)) for c, b in zip(counts[1:], bodies[1:], strict=True)] == expected[1:]


def test_the_announced_total_counts_the_pages_read_before_the_restore() -> None:
    config = PagingConfig(type="page", page_size=2, total_path="total", stop_on=["empty_page"])
    first = make_paginator(config, "u")
    first.first()
    first.next(resp(2, {"total": 6}))
    resumed = make_paginator(config, "u")
    resumed.restore(orjson.loads(orjson.dumps(first.state())))
    resumed.next(resp(2, {"total": 6}))
    with pytest.raises(BadDataError, match="having read 4 records, but the server announced 6"):
        resumed.next(resp(0, {"total": 6}))
