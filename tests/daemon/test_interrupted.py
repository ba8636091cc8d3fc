"""A run cut short by SIGKILL (``sluice serve`` or ``sluice run``) is recorded as ``run-interrupted``
when the pipe is next looked at: the execution log, ``last_run``, the API's state and ``sluice
pipes`` say so, what it committed is kept, and the next run resumes from there."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Runtime
from runtime.pipes import RUN_IN_PROGRESS
from runtime.pump.pumps import Scheduler
from runtime.pump.schedule import SOON_S
from runtime.store import SqliteStore, make_store
from tests.daemon.conftest import SLUICE, Api, Served, counter_pipe

N = 3000


def _slow(mode: str = "manual", **pump: Any) -> dict[str, Any]:
    pipe = counter_pipe("numbers", N, mode=mode, source={"chunk_size": 50, "delay_s": 0.05}, **pump)
    pipe["batch_size"] = 50
    return pipe


async def _store_view(data_dir: Path, store_url: str | None = None) -> tuple[list[Any], Any, int]:
    """(execution log, pipe state, committed ids) read straight from the store (the SQLite file
    unless ``store_url``)."""
    store = make_store(store_url, data_dir) if store_url else SqliteStore(data_dir / "sluice.db")
    await store.open()
    try:
        info = await store.dataset_info("numbers")
        return (await store.execution_log("numbers"), await store.pipe_state("numbers"),
                info.ids if info is not None else 0)
    finally:
        await store.close()


def _kill(served: Served) -> None:
    served.signal(signal.SIGKILL)
    served.wait()


async def _state_is(api: Api, state: str) -> bool:
    return bool((await api.pipe("numbers"))["state"] == state)


def _sluice(*args: str, data_dir: Path, store_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", **({"SLUICE_STORE": store_url} if store_url else {})}
    return subprocess.run([SLUICE, *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          env=env, timeout=120)


async def test_a_daemon_killed_mid_run_records_the_run_as_interrupted_on_restart(
        start_daemon: Any, session: Any, store_url: str | None) -> None:
    """On PostgreSQL the daemon is a cluster member, and the restarted daemon a new one: the dead
    member's pipe lease holds until it expires (1.5 s here), and the run is recorded then."""
    pg = {"args": ["--store", store_url], "env": {"SLUICE_CLUSTER_LEASE_S": "1.5"}} if store_url else {}
    served = start_daemon([_slow()], **pg)
    api = Api(served, session)
    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    await api.until(lambda: _committed_at_least(api, 300), "some batches to commit")
    _kill(served)
    log, state, committed = await _store_view(served.data_dir, store_url)
    assert [e.event for e in log] == ["run-started"] and 300 <= committed < N  # the kill left no end

    served.start()
    if store_url:  # recorded once the dead member's pipe lease expires (1.5 s) and the pipe is free
        await api.until(lambda: _state_is(api, "interrupted"), "the run recorded as interrupted", timeout=30)
    pipe = await api.pipe("numbers")
    assert pipe["state"] == "interrupted" and pipe["runs"] == 1
    last = pipe["last_run"]
    assert last["status"] == "interrupted" and last["run_id"] == log[0].run_id
    assert "interrupted" in last["error"] and last["started_us"] <= time.time_ns() // 1000
    events = await api.get("/api/pipes/numbers/log")
    assert [e["event"] for e in events] == ["run-started", "run-interrupted"]
    assert events[1]["since"] == committed == state.since  # resumes from what was committed
    listed = _sluice("pipes", str(served.config_dir), data_dir=served.data_dir, store_url=store_url)
    assert listed.returncode == 0 and "interrupted" in listed.stdout, listed

    await api.post("/api/pipes/numbers/pump", json={"operation": "start"})
    done = await api.until(lambda: _completed(api), "the resumed run to complete")
    assert done["state"] == "ok" and done["runs"] == 2
    versions = await api.get(f"/api/datasets/numbers/entities?history=true&limit={N + 100}")
    assert sorted(e["n"] for e in versions) == list(range(1, N + 1))  # nothing lost, nothing twice
    events = await api.get("/api/pipes/numbers/log")
    assert [e["event"] for e in events] == ["run-started", "run-interrupted", "run-started", "run-completed"]


async def test_sluice_run_killed_mid_run_is_recorded_by_the_next_sluice_run(start_daemon: Any) -> None:
    served = start_daemon([_slow()], start=False)  # its directories only: no daemon here
    cmd = [SLUICE, "run", str(served.config_dir), "--pipe", "numbers", "--data-dir", str(served.data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (served.data_dir / "sluice.db").exists() or (await _store_view(served.data_dir))[2] < 300:
            assert proc.poll() is None and time.monotonic() < deadline, "no batch committed in time"
            await anyio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [e.event for e in (await _store_view(served.data_dir))[0]] == ["run-started"]

    again = _sluice("run", str(served.config_dir), "--pipe", "numbers", data_dir=served.data_dir)
    assert again.returncode == 0, again.stderr
    log, state, committed = await _store_view(served.data_dir)
    assert [e.event for e in log] == ["run-started", "run-interrupted", "run-started", "run-completed"]
    assert log[1].run_id == log[0].run_id and 300 <= log[1].data["since"] < N
    assert committed == N and state.since == N and state.info["last_run"]["status"] == "completed"
    assert state.info[RUN_IN_PROGRESS] is None


async def test_an_interrupted_scheduled_pipe_resumes_soon_and_a_live_run_is_left_alone(write_config: Any) -> None:
    root = write_config([_slow(mode="scheduled", schedule_interval=3600),
                         counter_pipe("elsewhere", 3, schedule_interval=3600)])
    data = root.parent / "data"
    async with Runtime(root, data_dir=data) as rt:
        for pipe in ("numbers", "elsewhere"):  # as a killed process leaves them: a marker, no end
            marker = {"run_id": f"dead-{pipe}", "started_us": time.time_ns() // 1000 - 10**7, "full": False}
            await rt.store.record_run(pipe, marker["run_id"], "run-started", {"full": False},
                                      lambda info, m=marker: {"last_run": {"status": "completed", "started_us":
                                                              m["started_us"]}, RUN_IN_PROGRESS: m})
        other = Runtime(root, data_dir=data)  # `sluice run` in another process, running "elsewhere"
        async with other, other.store.pipe_lock("elsewhere"):
            scheduler = Scheduler(rt)
            async with anyio.create_task_group() as tg:
                await tg.start(scheduler.run)
                pump, now = scheduler.pumps["numbers"], time.time()
                for _ in range(1000):  # the pump task sets its first run time once it starts
                    if pump.next_at is not None:
                        break
                    await anyio.sleep(0.01)
                next_at, interrupted = pump.next_at, pump.interrupted
                numbers, elsewhere = await rt.pipe_state("numbers"), await rt.pipe_state("elsewhere")
                await scheduler.stop(5)
    assert interrupted and next_at is not None and next_at <= now + SOON_S  # not one hour later
    assert numbers.info["last_run"]["status"] == "interrupted"
    assert elsewhere.info["last_run"]["status"] == "completed"  # its lock is held: alive, untouched
    assert elsewhere.info[RUN_IN_PROGRESS]["run_id"] == "dead-elsewhere"


async def _committed_at_least(api: Api, n: int) -> bool:
    info = await api.get("/api/datasets/numbers", expect=None)
    return info.get("committed", -1) + 1 >= n


async def _completed(api: Api) -> dict[str, Any] | None:
    p = await api.pipe("numbers")
    return p if (p["last_run"] or {}).get("status") == "completed" and not p["running"] else None
