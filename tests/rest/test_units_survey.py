"""2-step ingestion (DIL) with the ``rest`` source over work units, against the survey API on
127.0.0.1 (:mod:`tests.servers.survey_api`): pipe ``surveys`` collects the ids, pipe ``responses``
reads survey x window units, each paged. Every assertion on what was asked is on the server's own
request log."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from runtime.workunits import WindowsConfig
from runtime.workunits.planning import windows
from tests.rest.conftest import ids, runtime
from tests.rest.survey_units import WEEKS, asked, server_responses, survey_config, unwrapped
from tests.servers.survey_api import START, SurveyApi, iso, serve

YEARS = {"start": "2024-01-01", "end": "now", "unit": "month", "size": 12}  # the last window is open


def last_page(count: int, per: int) -> int:
    return max(1, -(-count // per))


async def test_two_step_reads_every_response_then_only_open_units_ask_from_their_watermark(
        write_config, tmp_path) -> None:
    api = SurveyApi()  # 5 surveys x 40 responses over the first 6 weeks of 2024
    now = datetime.now(UTC)
    years = list(windows(WindowsConfig(**YEARS), now))
    open_key, open_vars, closed = years[-1]
    assert not closed and all(c for _, _, c in years[:-1])
    recent = max(datetime.fromisoformat(open_vars["window_start"]), now - timedelta(minutes=5))
    for survey in api.surveys:
        api.add_response(survey, recent, f"{survey}-recent", score=1)
    async with serve(api):
        cfg = write_config(survey_config(api.url, {"windows": YEARS}))
        async with runtime(cfg, tmp_path) as rt:
            assert (await rt.run_pipe("surveys")).new == 5
            first = await rt.run_pipe("responses")
            assert (first.status, first.kind, first.units["done"]) == ("completed", "full", 5 * len(years))
            got = await ids(rt, "responses")
            assert {k: unwrapped(e) for k, e in got.items()} == server_responses(api)
            marks = {u.key: u.watermark for u in await rt.store.work_units("responses")}
            assert marks[f"s1|{open_key}"] == iso(recent)  # each unit: the newest `submitted` it saw
            assert marks["s1|2024-01-01T00:00:00Z"] == api.window("s1")[-2]["submitted"]  # before -recent
            assert marks["s1|2025-01-01T00:00:00Z"] is None  # a window with no responses

            for survey in api.surveys:
                api.add_response(survey, recent + timedelta(seconds=30), f"{survey}-newer", score=2)
            api.add_response("s1", START + timedelta(days=1), "s1-late", score=3)  # into a closed window
            mark = len(api.requests)
            second = await rt.run_pipe("responses")
            assert (second.status, second.kind) == ("completed", "incremental")
            assert (second.units["done"], second.new, second.changed) == (5, 5, 0)
            # closed windows are not asked again; each open unit asks from its watermark, one page
            assert sorted((a.survey, a.start, a.end, a.page) for a in asked(api, mark)) == [
                (s, iso(recent), open_vars["window_end"], 1) for s in sorted(api.surveys)]
            got = await ids(rt, "responses")
            assert {f"{s}-newer" for s in api.surveys} <= set(got) and "s1-late" not in got


async def test_a_failing_survey_retries_alone_ends_dead_and_runs_alone_after_retry(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=4, responses=12, weeks=2)
    api.faults = [{"status": 500, "path": "/surveys/s3/", "repeat": True}]  # every request for s3 fails
    two_weeks = {**WEEKS, "end": "2024-01-15"}
    async with serve(api):
        cfg = write_config(survey_config(api.url, {"windows": two_weeks, "max_attempts": 3, "retry_backoff_s": 0}))
        async with runtime(cfg, tmp_path) as rt:
            await rt.run_pipe("surveys")
            runs = []
            while "failed" in await rt.store.unit_counts("responses") or not runs:
                assert len(runs) < 3, "more runs than max_attempts"
                mark = len(api.requests)
                result = await rt.run_pipe("responses")
                runs.append((result, asked(api, mark)))
            assert all(r.status == "completed" for r, _ in runs)  # only units failed
            assert {a.survey for a in runs[0][1]} == {"s1", "s2", "s3", "s4"}
            assert all({a.survey for a in later} == {"s3"} for _, later in runs[1:])  # it retries alone
            assert await rt.store.unit_counts("responses") == {"done": 6, "dead": 2}
            units = {u.key: u for u in await rt.store.work_units("responses")}
            for week in ("2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"):
                dead = units[f"s3|{week}"]
                assert (dead.status, dead.attempts) == ("dead", 3)
                assert "500" in dead.last_error and "/surveys/s3/responses" in dead.last_error
            # 3 unit attempts x 4 requests (the system's retry rule for 500) of page 1 per window
            assert Counter(a.window for _, run in runs for a in run if a.survey == "s3") == {
                ("s3", "2024-01-08T00:00:00Z"): 12, ("s3", "2024-01-15T00:00:00Z"): 12}
            events = Counter(e.event for e in await rt.execution_log("responses"))
            assert (events["unit-failed"], events["unit-dead"]) == (4, 2)
            expected = server_responses(api)
            got = await ids(rt, "responses")
            assert {k: unwrapped(e) for k, e in got.items()} == {
                k: r for k, r in expected.items() if r["survey_id"] != "s3"}

            api.faults = []  # the server is fixed
            assert await rt.store.retry_units("responses", None) == 2
            mark = len(api.requests)
            fixed = await rt.run_pipe("responses")
            assert fixed.units["done"] == 2 and {a.survey for a in asked(api, mark)} == {"s3"}
            assert await rt.store.unit_counts("responses") == {"done": 8}
            got = await ids(rt, "responses")
            assert {k: unwrapped(e) for k, e in got.items()} == expected


async def test_a_removed_response_is_deleted_only_after_the_sweep_in_which_every_unit_completed(
        write_config, tmp_path) -> None:
    api = SurveyApi(surveys=4, responses=12, weeks=2)
    two_weeks = {**WEEKS, "end": "2024-01-15"}
    async with serve(api):
        cfg = write_config(survey_config(api.url, {"windows": two_weeks, "retry_backoff_s": 3600}))
        async with runtime(cfg, tmp_path) as rt:
            await rt.run_pipe("surveys")
            assert (await rt.run_pipe("responses")).new == 48
            gone = api.window("s2", START, START + timedelta(weeks=1))[0]["id"]
            api.remove_response("s2", gone)
            api.faults = [{"status": 500, "path": "/surveys/s4/", "repeat": True}]

            sweep = await rt.run_pipe("responses", full=True)
            assert (sweep.status, sweep.kind, sweep.deleted) == ("completed", "full", 0)
            assert (sweep.units["done"], sweep.units["failed"]) == (6, 2)
            assert gone in await ids(rt, "responses")  # s4's units have not completed the sweep
            assert (await rt.pipe_state("responses")).sweep is not None

            waiting = await rt.run_pipe("responses")  # s4 is not due for an hour: the sweep stays open
            assert (waiting.deleted, waiting.units["done"]) == (0, 0) and gone in await ids(rt, "responses")

            api.faults = []
            assert await rt.store.retry_units("responses", None) == 2  # what `sluice units retry` does
            mark = len(api.requests)
            last = await rt.run_pipe("responses")
            assert (last.status, last.units["done"], last.deleted) == ("completed", 2, 1)
            assert {a.survey for a in asked(api, mark)} == {"s4"}  # the sweep went on: s2 was not re-read
            assert (await rt.pipe_state("responses")).sweep is None
            got = await ids(rt, "responses")
            assert gone not in got and {k: unwrapped(e) for k, e in got.items()} == server_responses(api)
            assert (await rt.entity("responses", gone))[0]["_deleted"] is True


async def test_a_unit_resumes_at_its_next_page_after_a_failure(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=2, responses=30, weeks=1)  # one weekly window: 10 pages of 3 per survey
    api.faults = [{"status": 500, "path": "/surveys/s1/responses", "query": "page=4"}] * 4  # page 4, every attempt
    one_week = {**WEEKS, "end": "2024-01-08"}
    async with serve(api):
        cfg = write_config(survey_config(api.url, {"windows": one_week, "retry_backoff_s": 3600}))
        async with runtime(cfg, tmp_path) as rt:
            await rt.run_pipe("surveys")
            first = await rt.run_pipe("responses")
            assert (first.units["done"], first.units["failed"]) == (1, 1)
            unit = {u.key: u for u in await rt.store.work_units("responses")}["s1|2024-01-01T00:00:00Z"]
            assert unit.checkpoint["next"]["params"]["page"] == "4" and unit.checkpoint["since"] is None
            assert unit.watermark == api.window("s1")[8]["submitted"]  # the newest of pages 1-3
            await rt.store.retry_units("responses", None)
            mark = len(api.requests)
            assert (await rt.run_pipe("responses")).units["done"] == 1
            assert [a.page for a in asked(api, mark)] == list(range(4, last_page(30, 3) + 1))
            pages = Counter(a.page for a in asked(api) if a.survey == "s1")
            assert pages == {**{p: 1 for p in range(1, 11)}, 4: 5}  # 4 failed attempts, then once more
            got = await ids(rt, "responses")
            assert {k: unwrapped(e) for k, e in got.items()} == server_responses(api)


async def test_a_checkpoint_of_another_paging_type_starts_the_unit_again(write_config, tmp_path) -> None:
    api = SurveyApi(surveys=1, responses=9, weeks=1)  # one unit of 3 pages
    api.faults = [{"status": 500, "path": "/surveys/s1/responses", "query": "page=2"}] * 4
    one_week = {**WEEKS, "end": "2024-01-08"}
    async with serve(api):
        config = survey_config(api.url, {"windows": one_week, "retry_backoff_s": 3600})
        config[0]["operations"]["list-responses"]["paging"] = {"type": "next_link", "next_link_path": "next",
                                                                "page_size": 3, "size_param": "per_page"}
        cfg = write_config(config)
        async with runtime(cfg, tmp_path) as rt:
            await rt.run_pipe("surveys")
            assert (await rt.run_pipe("responses")).units["failed"] == 1
            assert (await rt.store.work_units("responses"))[0].checkpoint["next"]["follow"] is True
        config[0]["operations"]["list-responses"]["paging"] = {"type": "page", "page_size": 3,
                                                              "size_param": "per_page", "total_path": "total"}
        write_config(config)  # paging changed: the next-link checkpoint means nothing to page paging
        async with runtime(cfg, tmp_path) as rt:
            await rt.store.retry_units("responses", None)
            mark = len(api.requests)
            assert (await rt.run_pipe("responses")).units["done"] == 1
            assert [a.page for a in asked(api, mark)] == [1, 2, 3]
            got = await ids(rt, "responses")
            assert {k: unwrapped(e) for k, e in got.items()} == server_responses(api)
