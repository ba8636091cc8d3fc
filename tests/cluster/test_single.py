"""On SQLite a daemon is a cluster of one: ``GET /api/cluster`` lists itself."""

from __future__ import annotations

from typing import Any

from tests.daemon.conftest import Api, counter_pipe, session, start_daemon  # noqa: F401 (fixtures)


async def test_sqlite_daemon_is_a_cluster_of_one(start_daemon: Any, session: Any) -> None:  # noqa: F811
    served = start_daemon([counter_pipe("counted", 3, mode="manual")])
    body = await Api(served, session).get("/api/cluster")
    assert body["mode"] == "single" and body["leader"] == "local"
    [me] = body["members"]
    assert me["alive"] and me["port"] == int(served.url.rsplit(":", 1)[1]) and me["leases"] == []
