"""JSON push receivers and JSON pull publishers against a real daemon.

The receiver ``inbox`` writes dataset ``inbox``; the publisher ``outbox`` serves it; the
publisher ``open`` serves it without a token (``anonymous_read``).
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
import orjson

from runtime.store import make_store
from tests.daemon.conftest import ADMIN, READ, Api, auth

OBJECTS = [
    {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"}},
    {"_id": "outbox", "type": "pipe", "source": {"type": "dataset", "dataset": "inbox"},
     "sink": {"type": "http_endpoint"}},
    {"_id": "open", "type": "pipe", "source": {"type": "dataset", "dataset": "inbox"},
     "transform": {"type": "example_stamp", "field": "public"},
     "sink": {"type": "http_endpoint", "anonymous_read": True}},
    {"_id": "guarded", "type": "pipe", "source": {"type": "http_endpoint", "token": "$SECRET(push-token)"}},
]


def push(api: Api, entities: list[dict[str, Any]], expect: int = 200, **params: Any) -> Any:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return api.post("/api/receivers/inbox/entities", json=entities, params=query, expect=expect)


def ents(*ids: str, **fields: Any) -> list[dict[str, Any]]:
    return [{"_id": i, "v": fields.get("v", 1)} for i in ids]


async def pull_all(api: Api, since: Any = None, limit: int = 2, token: str | None = READ,
                   pipe: str = "outbox") -> tuple[list[dict[str, Any]], Any]:
    """Page through a publisher like a client: since = the last _updated received."""
    got: list[dict[str, Any]] = []
    while True:
        params = {"limit": str(limit), **({"since": str(since)} if since is not None else {})}
        headers = auth(token) if token else {}
        url = f"{api.served.url}/api/publishers/{pipe}/entities"
        async with api.session.get(url, params=params, headers=headers) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
            assert r.headers["X-Dataset-Populated"] in ("true", "false")
            top = r.headers["X-Dataset-Max-Updated"]
        if not page:
            return got, since
        got += page
        since = page[-1]["_updated"]
        assert int(top) >= since


def store_args(store_url: str | None) -> list[str]:
    return ["--store", store_url] if store_url else []


async def test_full_sync_incremental_and_paging(start_daemon: Any, session: Any, store_url: str | None) -> None:
    api = Api(start_daemon(OBJECTS, env={"push-token": "p-secret"}, args=store_args(store_url)), session)
    first = await push(api, ents("a", "b", "c"), is_full=True, sequence_id="s1", is_first=True, request_id="r1")
    assert first["new"] == 3 and first["full_sync"] == "active"
    await push(api, ents("d", "e"), is_full=True, sequence_id="s1", request_id="r2", previous_request_id="r1")
    last = await push(api, [], is_full=True, sequence_id="s1", is_last=True, request_id="r3",
                      previous_request_id="r2")
    assert last["full_sync"] == "completed" and last["deleted"] == 0

    entities, since = await pull_all(api)
    assert [e["_id"] for e in entities] == ["a", "b", "c", "d", "e"]

    # a second full sync without d and e tombstones them
    await push(api, ents("a", "b"), is_full=True, sequence_id="s2", is_first=True, request_id="x1")
    done = await push(api, ents("c", v=2), is_full=True, sequence_id="s2", is_last=True, request_id="x2",
                      previous_request_id="x1")
    assert done["deleted"] == 2 and done["changed"] == 1
    changes, since = await pull_all(api, since=since)
    assert sorted((e["_id"], e.get("_deleted", False)) for e in changes) == [
        ("c", False), ("d", True), ("e", True)]

    # incremental pushes need no sequence; the publisher serves only what is new after since
    await push(api, ents("f"))
    newer, _ = await pull_all(api, since=since, limit=10)
    assert [e["_id"] for e in newer] == ["f"]

    everything, _ = await pull_all(api, limit=1000)
    assert {e["_id"]: e.get("_deleted", False) for e in everything} == {
        "a": False, "b": False, "c": False, "d": True, "e": True, "f": False}
    info = await api.get("/api/datasets/inbox")
    assert info["populated"] and info["deleted"] == 2


async def test_publisher_access_and_errors(start_daemon: Any, session: Any) -> None:
    api = Api(start_daemon(OBJECTS, env={"push-token": "p-secret"}), session)
    await push(api, ents("a", "b"))
    public, _ = await pull_all(api, token=None, pipe="open")
    assert [e["public"] for e in public] == [True, True]
    await api.get("/api/publishers/outbox/entities", token=None, expect=401)
    missing = await api.get("/api/publishers/inbox/entities", expect=404)
    assert "inbox" in missing["error"] and "http_endpoint sink" in missing["error"]
    limited = await api.get("/api/publishers/outbox/entities?limit=1")
    assert len(limited) == 1
    # the receiver's own token may push to it, and to nothing else
    url = f"{api.served.url}/api/receivers/guarded/entities"
    async with session.post(url, json=[{"_id": "g"}], headers=auth("p-secret")) as r:
        assert r.status == 200
    async with session.post(f"{api.served.url}/api/receivers/inbox/entities", json=[],
                            headers=auth("p-secret")) as r:
        assert r.status == 401
    bad = await push(api, [{"no": "id"}], expect=400)
    assert "_id" in bad["error"]


async def test_receiver_409_rules(start_daemon: Any, session: Any) -> None:
    api = Api(start_daemon(OBJECTS, env={"push-token": "p-secret"}), session)
    not_started = await push(api, ents("a"), expect=409, is_full=True, sequence_id="s1", request_id="r1")
    assert "not active" in not_started["error"] and not_started["sequence_id"] == "s1"
    await push(api, ents("a"), is_full=True, sequence_id="s1", is_first=True, request_id="r1")
    mid_first = await push(api, ents("b"), expect=409, is_full=True, sequence_id="s1", is_first=True,
                           request_id="r2", previous_request_id="r1")
    assert "is_first" in mid_first["error"]
    wrong_prev = await push(api, ents("b"), expect=409, is_full=True, sequence_id="s1", request_id="r2",
                            previous_request_id="r0")
    assert "previous_request_id" in wrong_prev["error"]
    changed = await push(api, ents("b"), expect=409, is_full=False, sequence_id="s1", request_id="r2",
                         previous_request_id="r1")
    assert "is_full changed" in changed["error"]
    no_seq = await push(api, ents("b"), expect=400, is_full=True, is_first=True)
    assert "sequence_id" in no_seq["error"]
    # the sequence is still intact after the refused requests; a new sequence replaces it
    await push(api, ents("b"), is_full=True, sequence_id="s1", request_id="r2", previous_request_id="r1")
    await push(api, ents("z"), is_full=True, sequence_id="s2", is_first=True, is_last=True, request_id="q1")
    late = await push(api, ents("c"), expect=409, is_full=True, sequence_id="s1", request_id="r3",
                      previous_request_id="r2")
    assert "not active" in late["error"]
    ids = {e["_id"]: e.get("_deleted", False) for e in await api.get("/api/datasets/inbox/entities")}
    assert ids == {"a": True, "b": True, "z": False}


async def test_a_full_sync_spread_over_requests_has_one_circuit_breaker_limit(start_daemon: Any,
                                                                              session: Any) -> None:
    guarded = {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"},
               "sink": {"type": "dataset", "circuit_breaker_threshold_count": 3}}
    api = Api(start_daemon([guarded]), session)
    await push(api, ents(*"abcdef"), is_full=True, sequence_id="s1", is_first=True, is_last=True, request_id="r1")
    assert (await api.get("/api/datasets/inbox"))["populated"]  # the breaker is active from now on
    # the second full sync changes 2 entities per request: under the limit each, over it together
    first = await push(api, ents("a", "b", v=2), is_full=True, sequence_id="s2", is_first=True, request_id="x1")
    assert first["changed"] == 2 and not (await api.get("/api/datasets/inbox"))["tripped"]
    await push(api, ents("c", "d", v=2), is_full=True, sequence_id="s2", request_id="x2", previous_request_id="x1")
    info = await api.get("/api/datasets/inbox")
    assert info["tripped"] and info["circuit_breaker"]["held"] == 1  # a, b, c visible; d held
    held = await push(api, ents("e", "f", v=2), expect=409, is_full=True, sequence_id="s2", is_last=True,
                      request_id="x3", previous_request_id="x2")
    assert "circuit breaker" in held["error"]
    visible = {e["_id"]: e["v"] for e in await api.get("/api/datasets/inbox/entities")}
    assert sorted(visible.values()).count(2) == 3  # 3 changes visible, the 4th held, none deleted


async def test_pushed_batch_is_durable_before_the_response(start_daemon: Any, session: Any,
        store_url: str | None) -> None:
    served = start_daemon(OBJECTS, env={"push-token": "p-secret"}, args=store_args(store_url))
    api = Api(served, session)
    answer = await push(api, [{"_id": f"k{i}", "i": i} for i in range(500)])
    assert answer["new"] == 500
    served.signal(signal.SIGKILL)  # no clean shutdown: only what was committed survives
    served.wait()
    store = make_store(store_url, served.data_dir)
    await store.open()
    try:
        info = await store.dataset_info("inbox")
        assert info is not None and info.ids == 500 and info.committed == 499
        entities, _ = await store.read("inbox", since=None, limit=1000)
        assert sorted(e["i"] for e in entities) == list(range(500))
    finally:
        await store.close()
    await anyio.sleep(0)


async def test_receiver_refuses_bad_entities_media_types_and_large_bodies(start_daemon: Any, session: Any) -> None:
    api = Api(start_daemon(OBJECTS, env={"push-token": "p-secret", "SLUICE_RECEIVER_MAX_BODY_BYTES": "2000"}),
              session)
    empty = await push(api, [{"_id": "ok"}, {"_id": ""}], expect=400)
    assert "entity 1: _id must be a non-empty string" in empty["error"] and "nothing was written" in empty["error"]
    flags = await push(api, [{"_id": "a", "_deleted": "yes"}, {"_id": "b", "_deleted": 1},
                             {"_id": "c", "_deleted": False}], expect=400)
    assert "entity 0: _deleted must be true or false" in flags["error"]
    assert "entity 1: _deleted" in flags["error"] and "entity 2" not in flags["error"]
    url = f"{api.served.url}/api/receivers/inbox/entities"
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        headers = {**auth(ADMIN), "Content-Type": content_type}
        async with session.post(url, data=b'[{"_id": "t"}]', headers=headers) as r:
            refused = await r.json()
            assert r.status == 415 and content_type in refused["error"], refused
    big = [{"_id": f"k{i}", "pad": "x" * 100} for i in range(30)]  # about 3,500 bytes
    too_large = await push(api, big, expect=413)
    assert "receiver_max_body_bytes" in too_large["error"] and too_large["max_bytes"] == 2000
    async with session.post(url, data=_chunks(orjson.dumps(big)), headers={  # no Content-Length
            **auth(ADMIN), "Content-Type": "application/json"}) as r:
        assert r.status == 413, await r.text()
    assert (await push(api, big[:10]))["new"] == 10  # under the limit: accepted
    ids = {e["_id"] for e in await api.get("/api/datasets/inbox/entities")}
    assert ids == {f"k{i}" for i in range(10)}  # nothing of the refused requests was written


async def _chunks(body: bytes) -> Any:
    for low in range(0, len(body), 500):
        yield body[low:low + 500]


async def test_a_publisher_without_transforms_serves_the_stored_versions_as_they_are(start_daemon: Any,
                                                                                     session: Any) -> None:
    history = {"_id": "everything", "type": "pipe",
               "source": {"type": "dataset", "dataset": "inbox", "include_previous_versions": True},
               "sink": {"type": "http_endpoint"}}
    api = Api(start_daemon([*OBJECTS, history], env={"push-token": "p-secret"}), session)
    await push(api, ents("a", "b", "c"))
    await push(api, [{"_id": "b", "v": 2, "nested": {"x": [1, None, "é"]}}, {"_id": "c", "_deleted": True}])
    for pipe, query in (("outbox", ""), ("everything", "&history=true")):
        stored = await api.get(f"/api/datasets/inbox/entities?limit=100{query}")
        served, _ = await pull_all(api, pipe=pipe, limit=2)
        assert served == stored and len(served) == (5 if query else 3)
