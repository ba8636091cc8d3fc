"""Regression tests of review findings 6, 11 and 12: OAuth2 token reuse for short-lived tokens,
``Retry-After`` parsing, and no duplicate writes from retried POST / PATCH requests."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from connectors.rest.auth import OAuth2
from connectors.rest.models import OAuth2Auth, RetryRule
from connectors.rest.retry import RetryPolicy, retry_after_seconds
from runtime import TransientError
from tests.rest.conftest import ids, runtime, system
from tests.servers.faulty_api import FaultyApi


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oauth(expires_in: object, **config: object) -> tuple[OAuth2, list[dict[str, str]], Clock]:
    fetches: list[dict[str, str]] = []
    clock = Clock()

    async def fetch(form: dict[str, str]) -> dict[str, object]:
        fetches.append(form)
        return {"access_token": f"t{len(fetches)}", "expires_in": expires_in}

    auth = OAuth2(OAuth2Auth(type="oauth2", token_url="/token", client_id="c", **config), fetch, clock)
    return auth, fetches, clock


async def test_short_lived_token_is_reused_until_half_its_lifetime() -> None:
    # expires_in 20 <= refresh_window 30 (default): formerly a new token for every request
    auth, fetches, clock = oauth(20)
    for _ in range(5):
        headers: dict[str, str] = {}
        await auth.apply(headers, {})
        assert headers["Authorization"] == "Bearer t1"
    clock.now += 9.9
    await auth.apply({}, {})
    assert len(fetches) == 1
    clock.now += 0.2  # past half of 20 s
    headers = {}
    await auth.apply(headers, {})
    assert headers["Authorization"] == "Bearer t2" and len(fetches) == 2


async def test_long_lived_token_refreshes_refresh_window_before_expiry() -> None:
    auth, fetches, clock = oauth(3600, refresh_window=30)
    await auth.apply({}, {})
    clock.now += 3569
    await auth.apply({}, {})
    assert len(fetches) == 1
    clock.now += 2
    await auth.apply({}, {})
    assert len(fetches) == 2


@pytest.mark.parametrize(("expires_in", "ttl"), [
    ("3600", 3600.0), (" 120.5 ", 120.5), (90, 90.0),
    ("soon", 60.0), (None, 60.0), (True, 60.0), (0, 60.0), (-5, 60.0), ("nan", 60.0),
])
async def test_expires_in_numeric_string_is_parsed(expires_in: object, ttl: float) -> None:
    auth, _, clock = oauth(expires_in, default_expires_in=60)
    await auth.apply({}, {})
    assert auth.expires_at - clock.now == ttl


def test_retry_after_fractional_seconds() -> None:
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds(" 0.25 ") == 0.25
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("-1") is None
    assert retry_after_seconds("1.5.2") is None
    assert RetryPolicy(rand=lambda: 0.5).delay(1, 503, "1.5") == 1.5
    assert RetryPolicy(rand=lambda: 0.5).delay(1, 429, "0.2") == 0.2


@pytest.mark.parametrize("zone", ["GMT", "+0000", "-0000", ""])
def test_retry_after_date_is_utc_whatever_the_local_zone(zone: str, monkeypatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # a naive date read as local time is off by 4-5 h
    time.tzset()
    try:
        when = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
        text = format_datetime(when, usegmt=True).replace(" GMT", f" {zone}".rstrip())
        assert retry_after_seconds(text, now=when.timestamp() - 10) == 10.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_policy_does_not_retry_non_idempotent_after_possible_delivery() -> None:
    policy = RetryPolicy(rand=lambda: 0.5)
    assert policy.delay(1, 503, idempotent=False) is None
    assert policy.delay(1, None, idempotent=False) is None  # reset / read timeout after sending
    assert policy.delay(1, 429, idempotent=False) == 0.5
    assert policy.delay(1, None, idempotent=False, sent=False) == 0.5  # connect failed
    assert policy.delay(1, 503, idempotent=True) == 0.5
    # opt-in per rule and per system; a rule wins over the system
    per_rule = RetryPolicy({"503": RetryRule(retry_non_idempotent=True)}, rand=lambda: 0.5)
    assert per_rule.delay(1, 503, idempotent=False) == 0.5
    assert per_rule.delay(1, 502, idempotent=False) is None
    per_system = RetryPolicy({"502": RetryRule(retry_non_idempotent=False)}, rand=lambda: 0.5,
                             retry_non_idempotent=True)
    assert per_system.delay(1, 503, idempotent=False) == 0.5
    assert per_system.delay(1, 502, idempotent=False) is None


def egress(url: str, method: str = "POST", **system_extra: object) -> list[dict[str, object]]:
    """Entities i00..i02 (a dataset pipe from /items/page) written out by a REST transform."""
    path = "/writes" if method == "POST" else "/writes/{{ entity.id }}"
    return [
        system(url, **system_extra),
        {"_id": "items", "type": "pipe", "source": {
            "type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
            "id_expression": "{{ id }}", "paging": {"type": "page", "page_size": 10, "size_param": "per_page"}}},
        {"_id": "out", "type": "pipe", "source": {"type": "dataset", "dataset": "items"},
         "transform": {"type": "rest", "system": "api", "method": method, "url": path, "concurrency": 1,
                       "side_effects": False,  # the retry policy of plain calls, without the outcome ledger
                       "payload": {"name": "{{ entity.name }}"}, "response_property": "r"}},
    ]


def few_items(api: FaultyApi) -> None:
    for key in list(api.items)[3:]:
        api.delete(key)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_write_cut_off_after_delivery_is_not_sent_twice(api: FaultyApi, write_config, tmp_path,
                                                              method: str) -> None:
    few_items(api)
    cfg = write_config(egress(api.url, method))
    api.faults.append({"cut": True, "path": "/writes"})  # the server writes, then drops the reply
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).ok
        result = await rt.run_pipe("out")
        assert result.status == "failed"
        assert f"{method} http://127.0.0.1" in str(result.error) and "on all 1 attempts" in str(result.error)
    assert [w["name"] for w in api.writes] == ["item 0"]  # formerly written twice


async def test_write_after_5xx_is_not_retried_but_429_is(api: FaultyApi, write_config, tmp_path) -> None:
    few_items(api)
    cfg = write_config(egress(api.url))
    api.faults.append({"status": 429, "retry_after": "0.01", "path": "/writes"})
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).ok
        assert (await rt.run_pipe("out")).ok
        assert sorted(w["name"] for w in api.writes) == ["item 0", "item 1", "item 2"]
        assert api.requests.count("/writes") == 3 + 1  # the 429 was retried
        api.faults.append({"status": 503, "path": "/writes"})
        await rt.reset_pipe("out")
        requests, writes = len(api.requests), len(api.writes)
        result = await rt.run_pipe("out")
        assert result.status == "failed" and isinstance(result.error, TransientError)
        assert "HTTP 503 after 1 attempt(s) from POST" in str(result.error)
    # the 503 was sent once; any other request of the run (the next entity may start while the
    # run fails) wrote once
    assert api.requests[requests:].count("/writes") == 1 + len(api.writes) - writes


async def test_opt_in_retries_writes(api: FaultyApi, write_config, tmp_path) -> None:
    few_items(api)
    cfg = write_config(egress(api.url, retry_non_idempotent=True))
    api.faults.append({"cut": True, "path": "/writes"})
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).ok
        assert (await rt.run_pipe("out")).ok
        out = await ids(rt, "out")
    assert [w["name"] for w in api.writes] == ["item 0", "item 0", "item 1", "item 2"]  # as asked
    assert out["i00"]["r"]["count"] == 2


async def test_write_is_retried_when_the_connection_never_opened(write_config, tmp_path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connect is refused, nothing sent
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cfg = write_config([
        system(url),
        {"_id": "out", "type": "pipe", "source": {"type": "embedded", "entities": [{"_id": "a", "name": "x"}]},
         "transform": {"type": "rest", "system": "api", "method": "POST", "url": "/writes",
                       "side_effects": False, "payload": {"name": "{{ entity.name }}"}}},
    ])
    async with runtime(cfg, tmp_path) as rt:
        result = await rt.run_pipe("out")
    assert result.status == "failed"
    assert "on all 4 attempts" in str(result.error)  # the connection rule's max_attempts


def test_max_delay_caps_the_delay_with_its_jitter() -> None:
    rule = {"503": RetryRule(max_attempts=20, base_delay=1.0, max_delay=30.0)}
    late = RetryPolicy(rule, rand=lambda: 0.999)  # the largest jitter: x1.5
    assert late.delay(5, 503) == pytest.approx(16 * 1.499)
    assert late.delay(6, 503) == 30.0  # 32 s x 1.5 would be 48 s
    assert RetryPolicy(rule, rand=lambda: 0.0).delay(6, 503) == 16.0  # 32 s x 0.5
