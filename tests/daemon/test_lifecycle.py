"""Daemon lifecycle: clean SIGTERM mid-run, SIGHUP and API reload, settings file and flags."""

from __future__ import annotations

import json
import signal
from typing import Any

from runtime.store import SqliteStore
from tests.daemon.conftest import ADMIN, Api, auth, counter_pipe

N = 3000


async def test_sigterm_mid_run_loses_and_duplicates_nothing(start_daemon: Any, session: Any) -> None:
    pipe = counter_pipe("numbers", N, mode="manual", source={"chunk_size": 50, "delay_s": 0.02})
    pipe["batch_size"] = 50
    served = start_daemon([pipe])
    api = Api(served, session)
    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    await api.until(lambda: _committed_at_least(api, 300), "some batches to commit")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    log = served.log()
    assert "daemon.stopped" in log

    store = SqliteStore(served.data_dir / "sluice.db")
    await store.open()
    try:
        state = await store.pipe_state("numbers")
        events = [e.event for e in await store.execution_log("numbers")]
        assert events == ["run-started", "run-stopped"]
        info = await store.dataset_info("numbers")
        assert info is not None and 300 <= info.ids < N
        assert state.since == info.ids  # the checkpoint covers exactly what was committed
    finally:
        await store.close()

    served.start()  # the next run resumes where the stopped one committed
    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "numbers"), "the resumed run to complete")
    versions = await api.get(f"/api/datasets/numbers/entities?history=true&limit={N + 100}")
    ids = [e["_id"] for e in versions]
    assert len(ids) == N and len(set(ids)) == N
    assert sorted(e["n"] for e in versions) == list(range(1, N + 1))


async def test_sighup_and_api_reload_keep_a_bad_config_out(start_daemon: Any, session: Any) -> None:
    served = start_daemon([counter_pipe("first", 5, mode="manual")])
    api = Api(served, session)

    served.write_config([counter_pipe("first", 5, mode="manual"), {"_id": "bad", "type": "pipe"}])
    served.signal(signal.SIGHUP)
    await api.until(lambda: _logged(served, "daemon.reload_refused"), "the bad reload to be refused")
    assert [p["_id"] for p in await api.get("/api/pipes")] == ["first"]
    refused = await api.post("/api/config/reload", expect=400)
    assert "running config is kept" in refused["error"]
    assert any(p["pipe"] == "bad" and p["key"] == "source" for p in refused["problems"])

    served.write_config([counter_pipe("first", 5, mode="manual"), counter_pipe("second", 3, mode="manual")])
    served.signal(signal.SIGHUP)
    await api.until(lambda: _pipes(api, {"first", "second"}), "the good reload by SIGHUP")
    await api.post("/api/pipes/second/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api, "second"), "the new pipe to run")

    served.write_config([counter_pipe("third", 1, mode="manual")])
    reloaded = await api.post("/api/config/reload")
    assert reloaded == {"reloaded": True, "pipes": ["third"]}
    assert [p["_id"] for p in await api.get("/api/pipes")] == ["third"]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


async def test_settings_file_env_and_flags(start_daemon: Any, session: Any, tmp_path: Any) -> None:
    settings = tmp_path / "sluice.yaml"
    settings.write_text(
        "port: 1\n"  # overridden by the --port 0 flag
        "public_status_page: true\n"
        "api_tokens:\n  - {token: \"$SECRET(file-admin)\", role: admin}\n  - {token: file-reader}\n"
    )
    served = start_daemon([counter_pipe("first", 2, mode="manual")], args=["--settings", str(settings)],
                          env={"file-admin": "from-secret", "SLUICE_PUBLIC_METRICS": "true"})
    api = Api(served, session)
    await api.post("/api/pipes/first/pump", json={"operation": "start"}, token="from-secret")
    await api.post("/api/pipes/first/pump", json={"operation": "start"}, token="file-reader", expect=403)
    await api.get("/api/pipes", token=ADMIN)  # SLUICE_ADMIN_TOKEN from the environment as well
    await api.get("/", token=None)
    await api.get("/metrics", token=None)
    await api.get("/api/pipes", token=None, expect=401)
    served.stop()

    bad = tmp_path / "bad.yaml"
    bad.write_text("signal_debounce_s: -5\nmystery: 1\n")
    broken = start_daemon([counter_pipe("first", 2)], args=["--settings", str(bad)], start=False)
    try:
        broken.start()
    except RuntimeError as exc:
        text = str(exc)
    else:
        raise AssertionError("a bad settings file must stop the daemon")
    assert "exited with 2" in text and "signal_debounce_s" in text and "mystery" in text and str(bad) in text


async def _committed_at_least(api: Api, n: int) -> bool:
    info = await api.get("/api/datasets/numbers", expect=None)
    return info.get("committed", -1) + 1 >= n


async def _completed(api: Api, pipe: str) -> bool:
    p = await api.pipe(pipe)
    return (p["last_run"] or {}).get("status") == "completed" and not p["running"]


async def _logged(served: Any, event: str) -> bool:
    return any(event in line for line in served.log().splitlines())


async def _pipes(api: Api, expected: set[str]) -> bool:
    async with api.session.get(api.served.url + "/api/pipes", headers=auth(ADMIN)) as r:
        return {p["_id"] for p in json.loads(await r.read())} == expected
