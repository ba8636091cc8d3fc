"""``GET /api/cluster``: the members of the cluster this daemon belongs to, their heartbeats and
what each holds (:mod:`runtime.cluster`).

The body is ``{"mode": "cluster" | "single", "member": ID, "leader": ID | null, "lease_s": S,
"members": [...]}``; each member is ``{"member", "host", "pid", "port", "started_us",
"heartbeat_us", "heartbeat_age_s", "alive", "leases": [{"name", "holder", "epoch",
"expires_in_s"}], "units": {pipe: running units it holds}}``. Times are microseconds since the
epoch, ages and expiries seconds. On SQLite the daemon is a cluster of one: itself, with the pipes
running in it as its leases (epoch 1, no expiry) and its running units.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from aiohttp import web

from runtime.daemon.app import daemon_of, json_response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/cluster", cluster)


async def cluster(request: web.Request) -> web.Response:
    """``GET /api/cluster`` (see the module docstring)."""
    daemon = daemon_of(request)
    member = daemon.cluster
    if member is not None:
        overview = await member.store.cluster_overview()
        leader = next((m["member"] for m in overview["members"]
                       if any(lease["name"] == "leader" for lease in m["leases"])), None)
        return json_response({"mode": "cluster", "member": member.member, "leader": leader,
                              "lease_s": member.membership.lease_s, **overview})
    return json_response({"mode": "single", "member": "local", "leader": "local", "lease_s": None,
                          "members": [await _single(daemon)]})


async def _single(daemon: Any) -> dict[str, Any]:
    now = time.time_ns() // 1000
    store, running = daemon.runtime.store, sorted(daemon.runtime.running)
    units: dict[str, int] = {}
    for pid, spec in daemon.runtime.config.pipes.items():
        if spec.source.cls.work_units(spec.source.config) is not None:
            count = (await store.unit_counts(pid)).get("running", 0)
            if count:
                units[pid] = count
    return {"member": "local", "host": socket.gethostname(), "pid": os.getpid(), "port": daemon.port,
            "started_us": int(daemon.started_at * 1e6), "heartbeat_us": now, "heartbeat_age_s": 0.0,
            "alive": True, "units": units,
            "leases": [{"name": f"pipe:{p}", "holder": f"run {daemon.runtime.running[p].result.run_id}",
                        "epoch": 1, "expires_in_s": None} for p in running]}
