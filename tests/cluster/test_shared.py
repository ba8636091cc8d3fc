"""The service API, publishers and receivers on every member of a cluster, reading the shared
store: three real ``sluice serve`` processes on one temporary PostgreSQL (fixtures in conftest.py).

Entities pushed to one member's receiver are stored once and read back through every member's
dataset API and publisher; a change pushed to another member is seen by all three.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.conftest import Cluster
from tests.daemon.conftest import Api

OBJECTS: list[dict[str, Any]] = [
    {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"}},
    {"_id": "outbox", "type": "pipe", "source": {"type": "dataset", "dataset": "inbox"},
     "sink": {"type": "http_endpoint"}},
]


async def published(api: Api) -> dict[str, dict[str, Any]]:
    """The publisher ``outbox`` of one member, paged through: latest entity by ``_id``."""
    got: dict[str, dict[str, Any]] = {}
    since: Any = None
    while page := await api.get("/api/publishers/outbox/entities",
                                params={"limit": "2", **({"since": str(since)} if since is not None else {})}):
        got.update((e["_id"], e) for e in page)
        since = page[-1]["_updated"]
    return got


async def seen_by(api: Api) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    """(live ids per ``GET /api/datasets/inbox``, the dataset's latest entities by id, the
    publisher's) as one member serves them."""
    info = await api.get("/api/datasets/inbox")
    entities = await api.get("/api/datasets/inbox/entities", params={"limit": "100"})
    latest = {e["_id"]: e for e in entities}
    return info["ids"] - info["deleted"], latest, await published(api)


async def test_every_member_serves_the_shared_store(cluster: Cluster) -> None:
    cluster.configure(OBJECTS)
    members = cluster.start(3)
    a, b, c = (cluster.api_of(m) for m in members)
    await b.post("/api/receivers/inbox/entities", json=[{"_id": f"e{i}", "v": 1} for i in range(3)])
    for api in (a, b, c):
        live, latest, pub = await seen_by(api)
        assert live == 3 and {i: e["v"] for i, e in latest.items()} == {"e0": 1, "e1": 1, "e2": 1}
        assert {i: e["v"] for i, e in pub.items()} == {"e0": 1, "e1": 1, "e2": 1}
    # the same entities again, through another member: stored once (no new version)
    await a.post("/api/receivers/inbox/entities", json=[{"_id": f"e{i}", "v": 1} for i in range(3)])
    assert await cluster.versions("inbox") == {"e0": 1, "e1": 1, "e2": 1}
    # a change and a deletion through the third member: every member serves them
    await c.post("/api/receivers/inbox/entities", json=[{"_id": "e1", "v": 2}, {"_id": "e2", "_deleted": True}])
    for api in (a, b, c):
        live, latest, pub = await seen_by(api)
        assert live == 2 and latest["e1"]["v"] == 2 and latest["e2"]["_deleted"] is True
        assert pub["e1"]["v"] == 2 and pub["e2"]["_deleted"] is True and pub["e0"]["v"] == 1
    assert await cluster.versions("inbox") == {"e0": 1, "e1": 2, "e2": 2}
    # every member lists the others, all alive
    for api in (a, b, c):
        listed = await api.get("/api/cluster")
        assert listed["mode"] == "cluster" and len(listed["members"]) == 3
        assert all(m["alive"] for m in listed["members"])
