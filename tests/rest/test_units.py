"""Paginators, auth and retry decisions without a server (they do no I/O of their own)."""

from __future__ import annotations

import base64

import pytest

from connectors.rest.auth import OAuth2, StaticAuth
from connectors.rest.models import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2Auth, PagingConfig, RetryRule
from connectors.rest.paging import PageGuard, PageResponse, link_next, make_paginator
from connectors.rest.retry import RateLimiter, RetryPolicy, retry_after_seconds
from runtime import BadDataError, Secret


def resp(count: int, body=None, headers=None, url="http://h/x") -> PageResponse:
    return PageResponse(url, headers or {}, body if body is not None else {}, count, "GET http://h/x")


def test_page_paginator_stops_on_short_page_and_total() -> None:
    p = make_paginator(PagingConfig(type="page", page_size=10, size_param="n"), "http://h/x")
    assert p.first().params == {"n": "10", "page": "1"}
    assert p.next(resp(10)).params["page"] == "2"
    assert p.next(resp(3)).params["page"] == "3"  # by default a short page does not stop ...
    assert p.next(resp(0)) is None  # ... an empty page does
    p = make_paginator(PagingConfig(type="page", page_size=10, stop_on=["short_page"]), "http://h/x")
    p.first()
    assert p.next(resp(3)) is None
    p = make_paginator(PagingConfig(type="page", page_size=10, total_header="X-Total-Count"), "u")
    p.first()
    assert p.next(resp(10, headers={"x-total-count": "20"})) is not None
    assert p.next(resp(10, headers={"x-total-count": "20"})) is None


def test_offset_paginator_advances_by_records_received() -> None:
    p = make_paginator(PagingConfig(type="offset", page_size=10, size_param="limit"), "u")
    assert p.first().params == {"limit": "10", "offset": "0"}
    assert p.next(resp(10)).params["offset"] == "10"
    assert p.next(resp(0)) is None


def test_link_header_and_body_links() -> None:
    assert link_next('<http://a/1>; rel="first", <http://a/3>; rel="next"') == "http://a/3"
    assert link_next('<http://a/1>; rel=prev') is None
    p = make_paginator(PagingConfig(type="link_header"), "http://h/x")
    nxt = p.next(resp(5, headers={"Link": '</x?page=2>; rel="next"'}))
    assert nxt is not None and nxt.url == "http://h/x?page=2" and nxt.follow
    p = make_paginator(PagingConfig(type="next_link", next_link_path="links.next"), "http://h/x")
    assert p.next(resp(5, body={"links": {"next": None}})) is None
    p = make_paginator(PagingConfig(type="next_link", next_link_header="Next-Page"), "http://h/x")
    assert p.next(resp(5, headers={"Next-Page": "http://h/x?_token=a"})).url.endswith("_token=a")


def test_cursor_must_advance() -> None:
    p = make_paginator(PagingConfig(type="cursor", cursor_path="next", cursor_param="c"), "u")
    p.first()
    assert p.next(resp(5, body={"next": "a"})).params == {"c": "a"}
    with pytest.raises(BadDataError, match="did not advance"):
        p.next(resp(5, body={"next": "a"}))
    assert make_paginator(PagingConfig(type="cursor", cursor_header="T"), "u").next(resp(5)) is None


def test_max_pages_and_guard() -> None:
    p = make_paginator(PagingConfig(type="page", page_size=2, max_pages=2), "u")
    p.first()
    p.next(resp(2))
    with pytest.raises(BadDataError, match="max_pages 2"):
        p.next(resp(2))
    guard = PageGuard()
    first = make_paginator(PagingConfig(type="page"), "u").first()
    guard.request(first, "here")
    with pytest.raises(BadDataError, match="paging loops"):
        guard.request(first, "here")
    guard.page(b"[1]", 1, "here")
    with pytest.raises(BadDataError, match="same page twice"):
        guard.page(b"[1]", 1, "here")


def test_paging_config_is_checked() -> None:
    with pytest.raises(ValueError, match="next_link_path"):
        PagingConfig(type="next_link")
    with pytest.raises(ValueError, match="short_page needs page_size"):
        PagingConfig(type="page", stop_on=["short_page"])


async def test_static_auth() -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    await StaticAuth(BasicAuth(type="basic", username="u", password=Secret("p"))).apply(headers, params)
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    await StaticAuth(BearerAuth(type="bearer", token=Secret("t"))).apply(headers, params)
    assert headers["Authorization"] == "Bearer t"
    key = StaticAuth(ApiKeyAuth(type="api_key", name="k", value=Secret("v"), location="query"))
    await key.apply(headers, params)
    assert params == {"k": "v"} and key.secret_params == {"k"}


async def test_oauth2_refreshes_before_expiry_and_after_401() -> None:
    now = [0.0]
    forms: list[dict[str, str]] = []

    async def fetch(form: dict[str, str]) -> dict:
        forms.append(form)
        return {"access_token": f"t{len(forms)}", "expires_in": 100, "refresh_token": f"r{len(forms)}"}

    config = OAuth2Auth(type="oauth2", token_url="/t", client_id="c", client_secret=Secret("s"),
                        grant_type="refresh_token", refresh_token=Secret("r0"), refresh_window=10)
    auth = OAuth2(config, fetch, clock=lambda: now[0])
    headers: dict[str, str] = {}
    await auth.apply(headers, {})
    assert headers["Authorization"] == "Bearer t1" and forms[0]["refresh_token"] == "r0"
    now[0] = 89.0
    await auth.apply(headers, {})
    assert len(forms) == 1  # still fresh
    now[0] = 91.0  # inside the refresh window: refreshed before it expires, with the rotated token
    await auth.apply(headers, {})
    assert headers["Authorization"] == "Bearer t2" and forms[1]["refresh_token"] == "r1"
    assert await auth.unauthorized({"Authorization": "Bearer t1"})  # stale request: keep t2
    await auth.apply(headers, {})
    assert len(forms) == 2
    assert await auth.unauthorized({"Authorization": "Bearer t2"})
    await auth.apply(headers, {})
    assert headers["Authorization"] == "Bearer t3"


def test_retry_policy_defaults_and_overrides() -> None:
    policy = RetryPolicy(rand=lambda: 0.5)
    assert policy.delay(1, 503) == 0.5 and policy.delay(2, 503) == 1.0
    assert policy.delay(5, 503) is None  # 5 attempts made
    assert policy.delay(1, 404) is None
    assert policy.delay(1, None) == 0.5
    assert policy.delay(1, 429, "7") == 7.0
    assert policy.delay(1, 429, "100000") is None  # longer than max_retry_after
    custom = RetryPolicy({"500-599": RetryRule(max_attempts=2), "503": RetryRule(retry=False),
                          "default": RetryRule(max_attempts=3, base_delay=1)}, rand=lambda: 0.5)
    assert custom.delay(1, 503) is None and custom.delay(1, 500) == 0.5 and custom.delay(2, 500) is None
    assert custom.delay(1, 404) == 1.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_rate_limiter_spaces_requests_and_pauses() -> None:
    now = [0.0]
    limiter = RateLimiter(4.0, clock=lambda: now[0])
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] = 10.0
    limiter.pause(2.0)
    assert limiter.reserve() == 2.0


def test_paging_short_of_the_announced_total_fails() -> None:
    # X-Total-Count is checked by default, whatever the paging type
    p = make_paginator(PagingConfig(type="link_header"), "http://h/x")
    with pytest.raises(BadDataError, match=r"read 5 records, but the server announced 12 \(header X-Total-Count\)"):
        p.next(resp(5, headers={"x-total-count": "12"}))
    assert make_paginator(None, "u").next(resp(5, headers={"X-Total-Count": "5"})) is None
    assert make_paginator(None, "u").next(resp(5)) is None  # no total announced: nothing to check
    # turned off
    assert make_paginator(PagingConfig(total_header=None), "u").next(resp(5, headers={"X-Total-Count": "9"})) is None
    # an empty page before the body total
    p = make_paginator(PagingConfig(type="page", total_path="meta.total"), "u")
    p.first()
    assert p.next(resp(10, body={"meta": {"total": 30}})) is not None
    with pytest.raises(BadDataError, match=r"read 10 records, but the server announced 30 \(total_path"):
        p.next(resp(0, body={"meta": {"total": 30}}))
    # max_pages with on_max_pages stop: the cut is known (the source is incomplete), no error
    p = make_paginator(PagingConfig(type="page", max_pages=1, on_max_pages="stop"), "u")
    p.first()
    assert p.next(resp(10, headers={"X-Total-Count": "30"})) is None and p.cut


def test_configured_total_location_must_be_in_the_first_response() -> None:
    p = make_paginator(PagingConfig(type="page", total_header="X-Count"), "u")
    p.first()
    with pytest.raises(BadDataError, match="total_header 'X-Count' is not in the response"):
        p.next(resp(10))
    p = make_paginator(PagingConfig(type="next_link", next_link_path="next", total_path="count"), "u")
    assert p.next(resp(10, body={"count": 12, "next": "/x?p=2"})) is not None
    assert p.next(resp(2, body={"next": None})) is None  # later pages may leave it out
    with pytest.raises(ValueError, match="total_path or total_header, not both"):
        PagingConfig(total_path="count", total_header="X-Count")


def test_since_paging_total_counts_from_each_request() -> None:
    # each since page announces what is left after its own since: 25, then 15, then 5
    p = make_paginator(PagingConfig(type="since", total_path="total"), "u")
    p.first()
    assert p.next(PageResponse("u", {}, {"total": 25}, 10, "GET u", last_updated=10)) is not None
    assert p.next(PageResponse("u", {}, {"total": 15}, 10, "GET u", last_updated=20)) is not None
    assert p.next(PageResponse("u", {}, {"total": 5}, 5, "GET u", last_updated=25)) is None
    p = make_paginator(PagingConfig(type="since", total_path="total"), "u")
    p.first()
    assert p.next(PageResponse("u", {}, {"total": 25}, 10, "GET u", last_updated=10)) is not None
    with pytest.raises(BadDataError, match="read 10 records, but the server announced 25"):
        p.next(PageResponse("u", {}, {"total": 15}, 0, "GET u"))


def test_401_renewals_share_the_attempt_budget() -> None:
    policy = RetryPolicy({"default": RetryRule(retry=False)})
    assert policy.reauthorize(1, 0) and policy.reauthorize(4, 1) and not policy.reauthorize(5, 1)  # 5 by default
    keyed = RetryPolicy({"401": RetryRule(max_attempts=3)})
    assert keyed.reauthorize(2, 1) and not keyed.reauthorize(3, 2)
    off = RetryPolicy({"400-499": RetryRule(retry=False)})
    assert off.reauthorize(1, 0) and not off.reauthorize(2, 1)  # the first renewal is always made
