"""The same collect pipe style against real servers no one here wrote: json-server 0.17.4
(page + Link + X-Total-Count), Datasette (keyset pagination, ``next_url``) and Kinto (``Next-Page``
header, ``_since``, basic auth). Each test checks the dataset against the server's own answer
after inserts, updates and deletes, through incremental and full runs."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.rest.conftest import ids, runtime
from tests.servers import real


def pipe(source: dict[str, Any]) -> dict[str, Any]:
    """The shared collect pipe style: since from ``updated``, chronological, 10 per batch."""
    return {"_id": "items", "type": "pipe", "batch_size": 10, "source": {
        "type": "rest", "system": "peer", "id_expression": "{{ id }}", "updated_expression": "{{ updated }}",
        "supports_since": True, "is_chronological": True, **source}}


def peer(url: str, **extra: Any) -> dict[str, Any]:
    return {"_id": "peer", "type": "system:rest", "base_url": url, **extra}


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[real.Server]:
    db = tmp_path / "db.json"
    db.write_bytes(orjson.dumps({"items": [{"id": n, "name": f"n{n}", "updated": n} for n in range(1, 24)]}))
    server = real.json_server(db)
    yield server
    server.stop()


async def test_json_server(json_server: real.Server, write_config, tmp_path) -> None:
    source = {"url": "/items", "params": {"_sort": "updated,id", "_page": "1", "_limit": "5",
                                          "updated_gte": "{{ (since or 0) + 1 }}"},
              "since_property_location": "template",
              "paging": {"type": "link_header", "total_header": "X-Total-Count", "stop_on": ["no_next"]}}
    cfg = write_config([peer(json_server.url), pipe(source)])
    base = json_server.url
    async with aiohttp.ClientSession() as http, runtime(cfg, tmp_path) as rt:
        async def truth() -> dict[str, str]:
            async with http.get(f"{base}/items") as r:
                return {str(i["id"]): i["name"] for i in await r.json()}

        assert (await rt.run_pipe("items")).read == 23
        await http.post(f"{base}/items", json={"id": 100, "name": "new", "updated": 30})
        await http.patch(f"{base}/items/3", json={"name": "changed", "updated": 31})
        await http.delete(f"{base}/items/4")
        incremental = await rt.run_pipe("items")
        assert incremental.read == 2 and not incremental.full
        got = await ids(rt, "items")
        assert got["3"]["name"] == "changed" and "100" in got and "4" in got
        full = await rt.run_pipe("items", full=True)
        assert full.deleted == 1
        assert {k: v["name"] for k, v in (await ids(rt, "items")).items()} == await truth()


@pytest.fixture
def datasette(tmp_path: Path) -> Iterator[tuple[real.Server, Path]]:
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table items (id text primary key, name text, updated integer)")
        c.executemany("insert into items values (?, ?, ?)", [(f"r{n:02}", f"n{n}", n) for n in range(1, 46)])
    server = real.datasette(db, page_size=10)
    yield server, db
    server.stop()


async def test_datasette(datasette: tuple[real.Server, Path], write_config, tmp_path) -> None:
    server, db = datasette
    source = {"url": "/db/items.json", "params": {"_shape": "objects", "_size": "10", "_sort": "updated"},
              "payload_property": "rows", "since_property_name": "updated__gt",
              "paging": {"type": "next_link", "next_link_path": "next_url"}}
    cfg = write_config([peer(server.url), pipe(source)])
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).read == 45
        with sqlite3.connect(db) as c:
            c.execute("insert into items values ('new', 'new', 50)")
            c.execute("update items set name = 'changed', updated = 51 where id = 'r07'")
            c.execute("delete from items where id = 'r08'")
        incremental = await rt.run_pipe("items")
        assert incremental.read == 2
        assert (await rt.run_pipe("items", full=True)).deleted == 1
        with sqlite3.connect(db) as c:
            truth = dict(c.execute("select id, name from items").fetchall())
        assert {k: v["name"] for k, v in (await ids(rt, "items")).items()} == truth


@pytest.fixture
def kinto(tmp_path: Path) -> Iterator[real.Server]:
    server = real.kinto(tmp_path)
    yield server
    server.stop()


async def test_kinto(kinto: real.Server, write_config, tmp_path) -> None:
    records = f"{kinto.url}/v1/buckets/b/collections/c/records"
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()
    async with aiohttp.ClientSession() as http:
        await http.put(f"{kinto.url}/v1/accounts/alice", json={"data": {"password": "pw"}})
        http.headers["Authorization"] = basic  # every later request is alice's
        (await http.put(f"{kinto.url}/v1/buckets/b", json={"data": {}})).raise_for_status()
        (await http.put(f"{kinto.url}/v1/buckets/b/collections/c", json={"data": {}})).raise_for_status()
        for n in range(12):
            await http.put(f"{records}/k{n:02}", json={"data": {"name": f"n{n}"}})
        os.environ["KINTO_PW"] = "pw"
        source = {"url": "/v1/buckets/b/collections/c/records", "params": {"_limit": "5", "_sort": "last_modified"},
                  "payload_property": "data", "updated_expression": "{{ last_modified }}",
                  "deleted_expression": "{{ deleted is defined and deleted }}", "since_property_name": "_since",
                  "paging": {"type": "next_link", "next_link_header": "Next-Page"}}
        system = peer(kinto.url, auth={"type": "basic", "username": "alice", "password": "$SECRET(KINTO_PW)"})
        cfg = write_config([system, pipe(source)])
        try:
            async with runtime(cfg, tmp_path) as rt:
                assert (await rt.run_pipe("items")).read == 12
                await http.put(f"{records}/new", json={"data": {"name": "new"}})
                await http.patch(f"{records}/k03", json={"data": {"name": "changed"}})
                await http.delete(f"{records}/k04")
                incremental = await rt.run_pipe("items")
                assert incremental.read == 3 and not incremental.full  # Kinto's _since returns the tombstone
                async with http.get(records) as r:
                    truth = {d["id"]: d["name"] for d in (await r.json())["data"]}
                assert {k: v["name"] for k, v in (await ids(rt, "items")).items()} == truth
                assert (await rt.run_pipe("items", full=True)).changes == 0
        finally:
            del os.environ["KINTO_PW"]
