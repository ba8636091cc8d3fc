"""Convergence under 20 % mixed faults with default settings (issue 8, "What it must show"): a
parameterized ``rest`` transform over 250 ids and a paged ``rest`` source reach the server's data
within 3 runs. The test API serves 5xx, 429, connection resets, truncated 200 bodies and expired
tokens to 20 % of requests, drawn from a fixed seed per request (not per arrival order)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime import Runtime, Secrets
from tests.rest.conftest import ids
from tests.servers.faulty_api import MIXED, FaultyApi, serve

SEED = 8
RATE = 0.2


@pytest.fixture
async def chaos() -> AsyncIterator[FaultyApi]:
    """The test API with 250 items behind OAuth2, 20 % of requests faulted."""
    server = FaultyApi()
    for n in range(250):
        server.upsert(f"i{n:03}", name=f"item {n}", value=n)
    server.auth = "oauth"
    server.chaos(RATE, SEED)
    async with serve(server):
        yield server


def system(url: str) -> dict[str, Any]:
    """A ``system:rest`` with every default (retries, concurrency, timeouts) and OAuth2."""
    return {"_id": "api", "type": "system:rest", "base_url": url,
            "auth": {"type": "oauth2", "token_url": "/oauth/token", "client_id": "client-1",
                     "client_secret": "$SECRET(CS)"}}


async def converge(rt: Runtime, pipe: str, done: Any) -> list[str]:
    """Run ``pipe`` up to 3 times until ``await done()``; the statuses of the runs made."""
    statuses: list[str] = []
    while len(statuses) < 3:
        statuses.append((await rt.run_pipe(pipe)).status)
        if await done():
            return statuses
    raise AssertionError(f"not converged after 3 runs: {statuses}")


def served_every_kind(api: FaultyApi) -> bool:
    return all(kind in api.drawn for kind in MIXED)


async def test_parameterized_transform_converges(chaos: FaultyApi, write_config, tmp_path) -> None:
    pipe = {"_id": "details", "type": "pipe",  # default batch size (1,000): one batch of 250
            "source": {"type": "embedded", "entities": [{"_id": k, "id": k} for k in sorted(chaos.items)]},
            "transform": {"type": "rest", "system": "api", "url": "/items/{{ entity.id }}"}}
    cfg = write_config([system(chaos.url), pipe])
    async with Runtime(cfg, data_dir=tmp_path / "data", secrets=Secrets(environ={"CS": "s3cret"})) as rt:
        async def done() -> bool:
            return {k: v["response"] for k, v in (await ids(rt, "details")).items()} == chaos.items

        await converge(rt, "details", done)
    assert served_every_kind(chaos) and len(chaos.drawn) >= 40


async def test_paged_source_converges(chaos: FaultyApi, write_config, tmp_path) -> None:
    pipe = {"_id": "items", "type": "pipe", "source": {
        "type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
        "id_expression": "{{ id }}",
        "paging": {"type": "page", "page_size": 10, "size_param": "per_page", "total_path": "total"}}}
    cfg = write_config([system(chaos.url), pipe])
    async with Runtime(cfg, data_dir=tmp_path / "data", secrets=Secrets(environ={"CS": "s3cret"})) as rt:
        async def done() -> bool:
            got = await ids(rt, "items")
            return {k: {f: v[f] for f in ("id", "name", "value", "updated")} for k, v in got.items()} == chaos.items

        await converge(rt, "items", done)
        for n in range(0, 250, 25):  # the server changes: 10 updates, 10 deletes, 10 new ids
            chaos.upsert(f"i{n:03}", name="changed", value=-n)
            chaos.delete(f"i{n + 1:03}")
            chaos.upsert(f"n{n:03}", name="new", value=n)
        await converge(rt, "items", done)
    assert served_every_kind(chaos)
