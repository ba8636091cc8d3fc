"""Operating work units in a real ``sluice serve`` (issue 9 items 3 and 5): the units API (list,
retry, refused while a run holds the pipe's lock), unit counts in ``GET /api/pipes``, on the status
page and in ``sluice_work_units{pipe,status}``; and the pump running a pipe again when a waiting
or failed unit comes due, long before its interval.

The units come from the example plugin's ``example_jobs`` source (tests/plugin_example), one
asynchronous job per unit: ready after ``polls`` polls, or failing while a flag file exists.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.store import SqliteStore
from tests.daemon.conftest import ADMIN, READ, Api, counter_pipe
from tests.daemon.test_metrics import samples, value

ZERO = dict.fromkeys(("pending", "running", "waiting", "done", "failed", "dead", "retired"), 0)


def jobs_pipe(pid: str, keys: list[str], pump: dict[str, Any], units: dict[str, Any] | None = None,
              **source: Any) -> dict[str, Any]:
    return {"_id": pid, "type": "pipe", "pump": pump,
            "source": {"type": "example_jobs", "work_units": {"values": keys, **(units or {})}, **source}}


async def units_of(api: Api, pipe: str) -> dict[str, int] | None:
    return (await api.pipe(pipe))["units"]


async def test_units_api_lists_retries_and_counts_units(start_daemon: Any, session: Any) -> None:
    served = start_daemon([
        jobs_pipe("jobs", ["a", "b", "c"], {"mode": "manual"}, {"max_attempts": 1},
                  failing=["b"], fail_while_exists="broken.flag"),
        counter_pipe("plain", 2, mode="manual"),
    ], start=False)
    (served.config_dir / "broken.flag").write_text("b fails while this file exists")
    served.start()
    api = Api(served, session)
    assert await units_of(api, "jobs") == ZERO and await units_of(api, "plain") is None
    await api.post("/api/pipes/jobs/pump", json={"operation": "start"})
    await api.until(lambda: _ran(api, "jobs", 1), "the first run")

    units = {u["key"]: u for u in await api.get("/api/pipes/jobs/units")}
    assert [(k, u["status"], u["attempts"]) for k, u in units.items()] == [
        ("a", "done", 0), ("b", "dead", 1), ("c", "done", 0)]
    assert "unit b fails on purpose" in units["b"]["last_error"] and units["b"]["variables"] == {"value": "b"}
    assert [u["key"] for u in await api.get("/api/pipes/jobs/units?status=dead")] == ["b"]
    await api.get("/api/pipes/jobs/units?status=broken", expect=400)
    await api.get("/api/pipes/plain/units", expect=404)
    counts = {**ZERO, "done": 2, "dead": 1}
    assert await units_of(api, "jobs") == counts
    assert {p["_id"]: p["units"] for p in await api.get("/api/pipes")} == {"jobs": counts, "plain": None}
    found = samples(await api.get("/metrics"))
    assert value(found, "sluice_work_units", pipe="jobs", status="dead") == 1
    assert value(found, "sluice_work_units", pipe="jobs", status="done") == 2
    page = await api.get(f"/?token={READ}", token=None)
    row = re.search(r'<tr id="pipe-jobs">.*?</tr>', page, re.DOTALL)
    assert row and {'<span class="unit done">done 2</span>', '<span class="unit dead">dead 1</span>'} <= set(
        re.findall(r'<span class="unit [^"]+">[^<]+</span>', row.group()))

    retry = {"operation": "retry", "keys": ["b"]}
    await api.call("POST", "/api/pipes/jobs/units", token=READ, json=retry, expect=403)
    missing = await api.post("/api/pipes/jobs/units", json={"operation": "retry", "keys": ["zz"]}, expect=404)
    assert "no work unit 'zz'" in missing["error"]
    await api.post("/api/pipes/jobs/units", json={"operation": "again"}, expect=400)
    await api.post("/api/pipes/jobs/units", json={"operation": "retry", "keys": "b"}, expect=400)
    other = SqliteStore(served.data_dir / "sluice.db")  # as the process of a run holding the pipe
    await other.open()
    try:
        async with other.pipe_lock("jobs", holder="run 0123abcd4567"):
            refused = await api.post("/api/pipes/jobs/units", json=retry, expect=409)
    finally:
        await other.close()
    assert "run 0123abcd4567" in refused["error"] and (await units_of(api, "jobs"))["dead"] == 1

    done = await api.post("/api/pipes/jobs/units", json=retry, token=ADMIN)
    assert (done["retried"], done["units"]) == (1, {**ZERO, "done": 2, "pending": 1})
    (served.config_dir / "broken.flag").unlink()
    await api.post("/api/pipes/jobs/pump", json={"operation": "start"})
    await api.until(lambda: _ran(api, "jobs", 2), "the run after the retry")
    assert await units_of(api, "jobs") == {**ZERO, "done": 3}
    found = samples(await api.get("/metrics"))
    assert value(found, "sluice_work_units", pipe="jobs", status="dead") == 0  # reset, not left at 1
    events = [e["event"] for e in await api.get("/api/pipes/jobs/log")]
    assert "unit-dead" in events and "units-retried" in events


async def test_the_pump_runs_a_pipe_again_when_a_waiting_or_failed_unit_comes_due(
        start_daemon: Any, session: Any) -> None:
    hourly = {"schedule_interval": 3600, "run_at_startup": True}  # runs again by interval only in an hour
    served = start_daemon([
        jobs_pipe("polled", ["job-1"], hourly, polls=1, poll_interval_s=1.0),
        jobs_pipe("retried", ["job-2"], hourly, {"retry_backoff_s": 1.0}, fail_while_exists="broken.flag"),
    ], start=False)
    (served.config_dir / "broken.flag").write_text("job-2 fails while this file exists")
    served.start()
    api = Api(served, session)
    await api.until(lambda: _ran(api, "retried", 1), "retried's first run")
    assert (await units_of(api, "retried"))["failed"] == 1
    (served.config_dir / "broken.flag").unlink()

    async def done(pipe: str) -> bool:
        return (await units_of(api, pipe))["done"] == 1

    await api.until(lambda: done("polled"), "the waiting job's poll to come due and the pump to run it", timeout=30)
    await api.until(lambda: done("retried"), "the failed unit to come due and the pump to run it", timeout=30)
    for pipe in ("polled", "retried"):  # the unit's commit is seen before its run is recorded as ended
        await api.until(lambda pipe=pipe: _ran(api, pipe, 2), f"{pipe}'s second run to be recorded", timeout=30)
        p = await api.pipe(pipe)
        assert p["runs"] >= 2 and p["last_run"]["status"] == "completed"
    log = [e["event"] for e in await api.get("/api/pipes/retried/log")]
    assert "unit-failed" in log
    entities = await api.get("/api/datasets/polled/entities")
    assert sorted(e["_id"] for e in entities) == ["job-1-0", "job-1-1"]


async def _ran(api: Api, pipe: str, runs: int) -> bool:
    p = await api.pipe(pipe)
    return p["runs"] >= runs and not p["running"]
