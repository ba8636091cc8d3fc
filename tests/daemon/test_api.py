"""Service API against a real daemon: authorization, pipe operations, datasets, config."""

from __future__ import annotations

from typing import Any

from tests.daemon.conftest import ADMIN, READ, Api, counter_pipe

SLOW = {"source": {"chunk_size": 10, "delay_s": 0.05}}


def objects() -> list[dict[str, Any]]:
    return [
        counter_pipe("numbers", 30, mode="manual"),
        counter_pipe("slow", 100_000, mode="manual", **SLOW),
        {"_id": "copy", "type": "pipe", "source": {"type": "dataset", "dataset": "numbers"},
         "pump": {"mode": "manual"}},
        {"_id": "frozen", "type": "pipe", "source": {"type": "embedded", "entities": []},
         "pump": {"mode": "off"}},
        {"_id": "secretive", "type": "pipe", "source": {"type": "embedded", "entities": [{"_id": "x"}]},
         "pump": {"mode": "manual"}, "metadata": {"note": "$SECRET(demo-secret)"}},
        {**counter_pipe("durable", 5, mode="manual"), "disable_set_last_seen": True},
    ]


ADMIN_OPS = [
    ("POST", "/api/pipes/numbers/pump", {"json": {"operation": "disable"}}),
    ("POST", "/api/datasets/numbers", {"json": {"operation": "commit-circuit-breaker"}}),
    ("POST", "/api/config/reload", {}),
    ("POST", "/api/config/validate", {}),
    ("POST", "/api/receivers/nothing/entities", {"json": []}),
]
READ_OPS = ["/api/pipes", "/api/pipes/numbers", "/api/pipes/numbers/log", "/api/datasets",
            "/api/config", "/metrics", "/"]


async def test_authorization(start_daemon: Any, session: Any) -> None:
    served = start_daemon(objects(), env={"demo-secret": "s3cr3t"})
    api = Api(served, session)
    assert (await api.get("/api/health", token=None)) == {"status": "ok", "pipes": 6}
    for path in READ_OPS:
        missing = await api.get(path, token=None, expect=401)
        assert "bearer token" in missing["error"]
        wrong = await api.get(path, token="nope", expect=401)
        assert "not valid" in wrong["error"]
        await api.get(path, token=READ)
        await api.get(path, token=ADMIN)
    for method, path, kw in ADMIN_OPS:
        await api.call(method, path, token=None, expect=401, **kw)
        await api.call(method, path, token="nope", expect=401, **kw)
        forbidden = await api.call(method, path, token=READ, expect=403, **kw)
        assert "admin" in forbidden["error"]
        answer = await api.call(method, path, token=ADMIN, expect=None, **kw)
        assert not (isinstance(answer, dict) and answer.get("status") in (401, 403)), answer


async def test_pipe_operations(start_daemon: Any, session: Any) -> None:
    served = start_daemon(objects(), env={"demo-secret": "s3cr3t"})
    api = Api(served, session)
    pipes = {p["_id"]: p for p in await api.get("/api/pipes")}
    assert set(pipes) == {"numbers", "slow", "copy", "frozen", "secretive", "durable"}
    assert pipes["numbers"]["state"] == "never-run"
    assert pipes["copy"]["reads"] == ["numbers"]

    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    done = await api.until(lambda: _completed(api, "numbers", 1), "numbers to run")
    assert done["since"] == 30 and done["counters"]["new"] == 30 and done["state"] == "ok"

    log = await api.get("/api/pipes/numbers/log")
    assert [e["event"] for e in log] == ["run-started", "run-completed"]
    assert log[1]["new"] == 30 and log[1]["status"] == "completed"
    assert await api.get(f"/api/pipes/numbers/log?since={log[0]['seq']}") == log[1:]

    out = await api.post("/api/pipes/numbers/pump", data={"operation": "disable", "comment": "maintenance"})
    assert out["pipe_state"]["state"] == "disabled"
    assert out["pipe_state"]["pump"]["disabled_comment"] == "maintenance"
    await api.post("/api/pipes/numbers/pump", json={"operation": "enable"})
    events = [e["event"] for e in await api.get("/api/pipes/numbers/log")]
    assert events[-2:] == ["pump-disabled", "pump-enabled"]

    out = await api.post("/api/pipes/numbers/pump", json={"operation": "update-last-seen", "last-seen": "20"})
    assert out["pipe_state"]["since"] == 20
    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    second = await api.until(lambda: _completed(api, "numbers", 2), "second run")
    assert second["last_run"]["read"] == 10 and second["last_run"]["kind"] == "incremental"

    out = await api.post("/api/pipes/numbers/pump?operation=reset")
    assert out["pipe_state"]["since"] is None
    await api.post("/api/pipes/numbers/pump", json={"operation": "start-rescan"})
    third = await api.until(lambda: _completed(api, "numbers", 3), "rescan")
    assert third["last_run"]["kind"] == "full" and third["last_run"]["read"] == 30

    await api.post("/api/pipes/copy/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "copy", 1), "copy run")
    out = await api.post("/api/pipes/copy/pump", json={"operation": "set-last-seen-to-end"})
    assert out["since"] == (await api.get("/api/datasets/numbers"))["committed"]

    await api.post("/api/pipes/slow/pump", json={"operation": "start"})
    await api.until(lambda: _running_with_progress(api, "slow"), "slow to commit a batch")
    again = await api.post("/api/pipes/slow/pump", json={"operation": "start"}, expect=409)
    assert "already running" in again["error"] and again["pipe"] == "slow"
    busy = await api.post("/api/pipes/slow/pump", json={"operation": "reset"}, expect=409)
    assert "running" in busy["error"] and "run " in busy["error"]  # names the running run
    moved = await api.post("/api/pipes/slow/pump", json={"operation": "update-last-seen", "last-seen": "5"},
                           expect=409)
    assert "run " in moved["error"]
    out = await api.post("/api/pipes/slow/pump", json={"operation": "stop"})
    assert out["stopping"] is True
    stopped = await api.until(lambda: _completed(api, "slow", 1, status="stopped"), "slow to stop")
    assert 0 < stopped["since"] < 100_000

    rescan = await api.post("/api/pipes/durable/pump", json={"operation": "start-rescan"}, expect=409)
    assert "disable_set_last_seen" in rescan["error"]

    off = await api.post("/api/pipes/frozen/pump", json={"operation": "start"}, expect=409)
    assert "frozen" in off["error"] and "off" in off["error"]
    unknown = await api.post("/api/pipes/numbers/pump", json={"operation": "explode"}, expect=400)
    assert "explode" in unknown["error"]
    missing = await api.get("/api/pipes/ghost", expect=404)
    assert "ghost" in missing["error"] and missing["pipe"] == "ghost"


async def test_datasets_and_config(start_daemon: Any, session: Any) -> None:
    served = start_daemon(objects(), env={"demo-secret": "s3cr3t"})
    api = Api(served, session)
    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "numbers", 1), "numbers to run")

    names = [d["_id"] for d in await api.get("/api/datasets")]
    assert "numbers" in names
    info = await api.get("/api/datasets/numbers")
    assert info["ids"] == 30 and info["committed"] == 29 and info["populated"] and not info["tripped"]
    page = await api.get("/api/datasets/numbers/entities?since=9&limit=5")
    assert [e["_updated"] for e in page] == [10, 11, 12, 13, 14]
    assert [e["_id"] for e in page] == ["n11", "n12", "n13", "n14", "n15"]
    one = await api.get("/api/datasets/numbers/entity?entity_id=n7")
    assert one["n"] == 7 and one["_id"] == "n7"
    history = await api.get("/api/datasets/numbers/entity?entity_id=n7&history=true")
    assert isinstance(history, list) and len(history) == 1
    everything = await api.get("/api/datasets/numbers/entities?history=true&limit=1000&deleted=false")
    assert len(everything) == 30

    nope = await api.get("/api/datasets/ghost/entities", expect=404)
    assert "ghost" in nope["error"]
    bad = await api.get("/api/datasets/numbers/entities?limit=abc", expect=400)
    assert "limit" in bad["error"]
    gone = await api.get("/api/datasets/numbers/entity?entity_id=zzz", expect=404)
    assert "zzz" in gone["error"]
    refused = await api.post("/api/datasets/numbers", json={"operation": "commit-circuit-breaker"}, expect=409)
    assert "numbers" in refused["error"] and "no tripped circuit breaker" in refused["error"]

    config = await api.get("/api/config")
    assert {p["_id"] for p in config["pipes"]} == {"numbers", "slow", "copy", "frozen", "secretive", "durable"}
    secretive = next(p for p in config["pipes"] if p["_id"] == "secretive")
    assert secretive["metadata"]["note"] == "***"
    assert "s3cr3t" not in str(config)
    assert (await api.get("/api/pipes/secretive/config"))["metadata"]["note"] == "***"

    valid = await api.post("/api/config/validate")
    assert valid["valid"] is True and "numbers" in valid["pipes"]
    posted = [{"_id": "p", "type": "pipe", "source": {"type": "nope"}},
              {"_id": "q", "type": "pipe", "source": {"type": "embedded", "entities": []}, "batch_size": 0}]
    checked = await api.post("/api/config/validate", json=posted)
    assert checked["valid"] is False
    keys = {(p["pipe"], p["key"]) for p in checked["problems"]}
    assert ("p", "source.type") in keys and ("q", "batch_size") in keys


async def _completed(api: Api, pipe: str, runs: int, status: str = "completed") -> dict[str, Any] | None:
    p = await api.pipe(pipe)
    last = p["last_run"] or {}
    return p if p["runs"] >= runs and not p["running"] and last.get("status") == status else None


async def _running_with_progress(api: Api, pipe: str) -> bool:
    p = await api.pipe(pipe)
    return bool(p["running"] and p["live"] and p["live"]["new"] > 0)


def embedded(n: int) -> list[dict[str, Any]]:
    return [{"_id": "guarded", "type": "pipe",
             "source": {"type": "embedded", "entities": [{"_id": f"e{i}"} for i in range(n)]},
             "sink": {"type": "dataset", "circuit_breaker_threshold_count": 5},
             "pump": {"mode": "manual"}}]


async def test_circuit_breaker_rollback_and_commit(start_daemon: Any, session: Any) -> None:
    served = start_daemon(embedded(3))
    api = Api(served, session)
    await api.post("/api/pipes/guarded/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "guarded", 1), "the first run (breaker inactive)")
    served.write_config(embedded(20))
    await api.post("/api/config/reload")

    await api.post("/api/pipes/guarded/pump", json={"operation": "start"})
    tripped = await api.until(lambda: _completed(api, "guarded", 2, status="failed"), "the breaker to trip")
    assert tripped["state"] == "tripped" and tripped["tripped_datasets"] == ["guarded"]
    info = await api.get("/api/datasets/guarded")
    assert info["circuit_breaker"]["held"] == 12 and info["circuit_breaker"]["pipe"] == "guarded"
    assert len(await api.get("/api/datasets/guarded/entities?limit=100")) == 8

    rolled = await api.post("/api/datasets/guarded", data={"operation": "rollback-circuit-breaker"})
    assert rolled["versions"] == 17 and rolled["dataset_state"]["tripped"] is False
    # the dataset is as before the tripping run: the 12 held versions are gone and the 5 ids the
    # run made visible are reverted (they did not exist before it: now deleted)
    after = await api.get("/api/datasets/guarded/entities?limit=100")
    assert sorted(e["_id"] for e in after if not e.get("_deleted")) == ["e0", "e1", "e2"]
    assert len([e for e in after if e.get("_deleted")]) == 5

    await api.post("/api/pipes/guarded/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "guarded", 3, status="failed"), "the breaker to trip again")
    held = (await api.get("/api/datasets/guarded"))["circuit_breaker"]["held"]
    committed = await api.post("/api/datasets/guarded", json={"operation": "commit-circuit-breaker"})
    assert committed["versions"] == held > 0
    assert len(await api.get("/api/datasets/guarded/entities?limit=100")) == 20
    events = [e["event"] for e in await api.get("/api/pipes/guarded/log?limit=100")]
    assert "circuit-breaker-rollback" in events and "circuit-breaker-commit" in events
    assert (await api.pipe("guarded"))["state"] == "failed"  # last run failed; no longer tripped
