"""The pump in a real daemon: interval and cron schedules, run_at_startup, manual mode,
signalling a downstream pipe, retries with backoff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.daemon.conftest import Api, counter_pipe


async def _runs(api: Api, pipe: str) -> int:
    return (await api.pipe(pipe))["runs"]


async def test_interval_cron_startup_and_manual(start_daemon: Any, session: Any) -> None:
    served = start_daemon([
        counter_pipe("every-second", 5, schedule_interval=0.5),
        counter_pipe("cron", 5, cron_expression="* * * * * */1"),
        counter_pipe("startup", 5, schedule_interval=3600, run_at_startup=True),
        counter_pipe("manual", 5, mode="manual", run_at_startup=True),
    ])
    api = Api(served, session)
    await api.until(lambda: _at_least(api, "every-second", 3), "interval pipe to run 3 times")
    await api.until(lambda: _at_least(api, "cron", 2), "cron pipe to fire twice")
    startup = await api.until(lambda: _at_least(api, "startup", 1), "run_at_startup")
    assert startup["runs"] == 1 and startup["pump"]["schedule_interval"] == 3600
    next_run = datetime.fromisoformat(startup["pump"]["next_run"].replace("Z", "+00:00"))
    assert next_run.timestamp() > datetime.now().timestamp() + 3000

    cron = await api.pipe("cron")
    assert cron["pump"]["cron_expression"] == "* * * * * */1"
    assert cron["pump"]["next_run"] is not None
    manual = await api.pipe("manual")
    assert manual["state"] == "never-run" and manual["pump"]["next_run"] is None

    log = await api.get("/api/pipes/every-second/log?limit=1000")
    starts = [e for e in log if e["event"] == "run-started"]
    ends = [e for e in log if e["event"] == "run-completed"]
    assert len(starts) >= 3 and len(ends) >= 3
    assert ends[0]["new"] == 5 and all(e["new"] == 0 for e in ends[1:])


async def test_a_pipe_that_never_ran_starts_soon_after_the_daemon(start_daemon: Any, session: Any) -> None:
    # default interval 900 s: before, the first run came one interval after the start
    served = start_daemon([counter_pipe("newcomer", 5), counter_pipe("nightly", 5, cron_expression="0 3 * * *")])
    api = Api(served, session)
    ran = await api.until(lambda: _at_least(api, "newcomer", 1, status="completed"), "the first run", timeout=30)
    assert ran["since"] == 5 and ran["pump"]["schedule_interval"] == 900
    assert (await api.pipe("nightly"))["state"] == "never-run"  # a cron pipe waits for its fire time


async def test_signal_runs_downstream(start_daemon: Any, session: Any) -> None:
    served = start_daemon([
        counter_pipe("upstream", 40, mode="manual"),
        {"_id": "downstream", "type": "pipe", "source": {"type": "dataset", "dataset": "upstream"},
         "pump": {"schedule_interval": 3600}},
        {"_id": "manual-downstream", "type": "pipe", "source": {"type": "dataset", "dataset": "upstream"},
         "pump": {"mode": "manual"}},
    ])
    api = Api(served, session)
    await api.post("/api/pipes/upstream/pump", json={"operation": "start"})
    # (a never-run downstream may also have run once on its own within seconds of the start,
    # before upstream wrote anything: the signal must still run it again)
    info = await api.until(lambda: _ids(api, "downstream", 40), "signal to run downstream and fill it")
    assert info["ids"] == 40
    down = await api.until(lambda: _at_least(api, "downstream", 1), "downstream's run to be recorded")
    assert down["since"] == 39 or down["running"]
    assert (await api.pipe("manual-downstream"))["runs"] == 0


async def test_failed_runs_are_retried_with_backoff(start_daemon: Any, session: Any) -> None:
    served = start_daemon(
        [counter_pipe("flaky", 10, schedule_interval=3600, run_at_startup=True,
                      source={"fail_while_exists": "broken.flag"})],
        env={"SLUICE_RETRY_BACKOFF_S": "0.2", "SLUICE_RETRY_BACKOFF_MAX_S": "0.5"}, start=False,
    )
    flag = served.config_dir / "broken.flag"
    flag.write_text("x")
    served.start()
    api = Api(served, session)
    failing = await api.until(lambda: _failures(api, "flaky", 3), "three failed attempts")
    assert failing["state"] == "failed" and "broken.flag" in failing["pump"]["last_error"]
    flag.unlink()
    ok = await api.until(lambda: _at_least(api, "flaky", 4, status="completed"), "retry to succeed")
    assert ok["pump"]["consecutive_failures"] == 0 and ok["since"] == 10
    log = await api.get("/api/pipes/flaky/log?limit=1000")
    finals = [e["event"] for e in log if e["event"] != "run-started"]
    assert finals[:3] == ["run-failed"] * 3 and finals[-1] == "run-completed"
    assert "broken.flag" in next(e for e in log if e["event"] == "run-failed")["error"]


async def _at_least(api: Api, pipe: str, runs: int, status: str | None = None) -> dict[str, Any] | None:
    p = await api.pipe(pipe)
    last = p["last_run"] or {}
    if p["runs"] >= runs and (status is None or last.get("status") == status):
        return p
    return None


async def _ids(api: Api, dataset: str, n: int) -> dict[str, Any] | None:
    info = await api.get(f"/api/datasets/{dataset}", expect=None)
    return info if info.get("ids") == n else None


async def _failures(api: Api, pipe: str, n: int) -> dict[str, Any] | None:
    p = await api.pipe(pipe)
    return p if p["pump"]["consecutive_failures"] >= n and not p["running"] else None


async def test_a_cron_run_missed_while_the_daemon_was_down_runs_at_start(start_daemon: Any, session: Any) -> None:
    import sqlite3

    import orjson

    from runtime import Runtime

    yearly = "0 0 1 1 *"  # 1 January, 00:00 UTC
    served = start_daemon([counter_pipe("missed", 3, cron_expression=yearly),
                           counter_pipe("not-missed", 3, cron_expression=yearly)], start=False)
    async with Runtime(served.config_dir, data_dir=served.data_dir) as rt:  # one run each, recorded
        for pipe in ("missed", "not-missed"):
            assert (await rt.run_pipe(pipe)).ok
    missed_start = datetime(2025, 12, 31).timestamp()  # the daemon was down on 1 January 2026
    with sqlite3.connect(served.data_dir / "sluice.db") as db:
        info = orjson.loads(db.execute("SELECT info FROM pipes WHERE pipe = 'missed'").fetchone()[0])
        info["last_run"]["started_us"] = int(missed_start * 1e6)
        db.execute("UPDATE pipes SET info = ? WHERE pipe = 'missed'", (orjson.dumps(info).decode(),))
    api = Api(served.start(), session)
    await api.until(lambda: _at_least(api, "missed", 2), "the missed cron run")
    not_missed = await api.pipe("not-missed")
    assert not_missed["runs"] == 1 and not_missed["pump"]["next_run"].startswith(f"{datetime.now().year + 1}-01-01")


async def test_a_run_refused_by_another_process_holding_the_pipe_is_retried_after_a_backoff(write_config) -> None:
    import time

    import anyio

    from runtime import Runtime
    from runtime.pump.pumps import Scheduler

    root = write_config([counter_pipe("busy", 3, schedule_interval=60, run_at_startup=True)])
    async with Runtime(root, data_dir=root.parent / "data") as rt:
        other = Runtime(root, data_dir=root.parent / "data")  # e.g. `sluice run` in another process
        async with other, other.store.pipe_lock("busy"):
            scheduler = Scheduler(rt, backoff_s=0.5)
            async with anyio.create_task_group() as tg:
                await tg.start(scheduler.run)
                await anyio.sleep(1.2)
                pump = scheduler.pumps["busy"]
                failures, next_at, error = pump.failures, pump.next_at, pump.last_error
                await scheduler.stop(5)
    # refused runs back off (0.5 s, then 1 s): two or three attempts, not thousands
    assert 1 <= failures <= 3 and next_at is not None and next_at > time.time() - 1
    assert error is not None and "already running" in error
