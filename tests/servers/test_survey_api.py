"""The survey test API itself, over real HTTP on 127.0.0.1: the survey list, responses by
``[from, to)`` window and page, the seeded ground truth and its changes, faults that break one
survey, bad parameters, and the standalone command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO
from tests.servers.survey_api import START, SurveyApi, serve

Http = tuple[aiohttp.ClientSession, SurveyApi]


@pytest.fixture
async def surveys() -> AsyncIterator[Http]:
    """A session against the default survey API: 5 surveys of 40 responses over 6 weeks."""
    api = SurveyApi()
    async with serve(api) as url, aiohttp.ClientSession(url) as session:
        yield session, api


async def walk(session: aiohttp.ClientSession, path: str, **params: str) -> list[dict[str, Any]]:
    """Every page of a listing, following ``next`` (at most 100 pages); checks ``total``."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    for _ in range(100):
        async with session.get(url, params=params) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        rows += body["data"]
        url, params = body["next"], {}
        if url is None:
            assert body["total"] == len(rows)
            return rows
    raise AssertionError(f"{path}: more than 100 pages")


async def test_the_survey_list_pages_with_a_total(surveys: Http) -> None:
    session, api = surveys
    listed = await walk(session, "/surveys", per_page="2")
    assert [s["id"] for s in listed] == ["s1", "s2", "s3", "s4", "s5"] == list(api.surveys)
    async with session.get("/surveys", params={"page": "3", "per_page": "2"}) as response:
        body = await response.json()
    assert (len(body["data"]), body["page"], body["total"], body["next"]) == (1, 3, 5, None)


async def test_responses_are_those_submitted_in_from_to_paged_in_order(surveys: Http) -> None:
    session, api = surveys
    start, end = START + timedelta(weeks=1), START + timedelta(weeks=2)
    api.add_response("s2", start, "at-from", score=1)
    api.add_response("s2", end, "at-to", score=2)
    week = await walk(session, "/surveys/s2/responses", **{"from": "2024-01-08T00:00:00Z",
                                                              "to": "2024-01-15T00:00:00+00:00", "per_page": "3"})
    assert week == api.window("s2", start, end)
    assert "at-from" in {r["id"] for r in week} and "at-to" not in {r["id"] for r in week}
    assert [r["submitted"] for r in week] == sorted(r["submitted"] for r in week)
    assert len(week) > 3  # several pages
    assert await walk(session, "/surveys/s2/responses", to="2024-01-08T00:00:00") == api.window("s2", None, start)
    every = await walk(session, "/surveys/s2/responses", per_page="1000")
    assert len(every) == 42 and {r["survey_id"] for r in every} == {"s2"}


async def test_the_seed_decides_the_data_spread_over_the_weeks() -> None:
    one, same, other = SurveyApi(seed=3), SurveyApi(seed=3), SurveyApi(seed=4)
    assert one.responses == same.responses != other.responses
    weeks = {(datetime.fromisoformat(r["submitted"]) - START).days // 7 for r in one.responses["s1"].values()}
    assert weeks == set(range(6))  # every one of the 6 weeks has responses, none outside them


async def test_added_and_removed_surveys_and_responses_show(surveys: Http) -> None:
    session, api = surveys
    api.add_survey("s9", "Late survey")
    added = api.add_response("s9", START, score=5)
    api.remove_response("s1", "s1-r0001")
    api.remove_survey("s5")
    assert [s["id"] for s in await walk(session, "/surveys")] == ["s1", "s2", "s3", "s4", "s9"]
    assert await walk(session, "/surveys/s9/responses") == [added] and added["id"] == "s9-r0001"
    assert "s1-r0001" not in {r["id"] for r in await walk(session, "/surveys/s1/responses", per_page="100")}
    async with session.get("/surveys/s5/responses") as response:
        assert response.status == 404
        assert "s5" in (await response.json())["message"]


async def test_a_repeated_fault_breaks_one_survey_until_removed(surveys: Http) -> None:
    session, api = surveys
    broken = {"status": 500, "path": "/surveys/s3/", "repeat": True}
    api.faults.append(broken)
    for _ in range(3):
        async with session.get("/surveys/s3/responses", params={"page": "2"}) as response:
            assert response.status == 500
    assert len(await walk(session, "/surveys/s4/responses", per_page="100")) == 40
    api.faults.remove(broken)
    assert len(await walk(session, "/surveys/s3/responses", per_page="100")) == 40
    assert api.request_counts()["GET /surveys/s3/responses?page=2"] == 3


async def test_queued_faults_are_consumed_once_per_matching_request(surveys: Http) -> None:
    session, api = surveys
    api.faults += [{"status": 429, "retry_after": "2", "query": "page=2"}, {"truncate": True, "path": "/surveys/s1"}]
    async with session.get("/surveys/s1/responses", params={"page": "2"}) as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "2")
    async with session.get("/surveys/s1/responses") as response:
        assert response.status == 200
        with pytest.raises(ValueError):
            await response.json()  # half a JSON body
    async with session.get("/surveys/s1/responses", params={"page": "2"}) as response:
        assert response.status == 200
    assert api.faults == []


async def test_requests_in_flight_are_counted(surveys: Http) -> None:
    session, api = surveys
    api.faults.append({"delay": 2.0, "path": "/surveys", "repeat": True})  # each stays in flight 2 s

    async def get(page: str) -> int:
        async with session.get("/surveys", params={"page": page}) as response:
            return response.status

    calls = [asyncio.create_task(get(str(n))) for n in range(1, 4)]
    for _ in range(1000):  # until the server holds all three (not a timing assertion)
        if api.in_flight == 3:
            break
        await asyncio.sleep(0.005)
    assert await asyncio.gather(*calls) == [200, 200, 200]
    assert (api.max_in_flight, api.in_flight) == (3, 0)


async def test_bad_parameters_are_400_naming_the_parameter(surveys: Http) -> None:
    session, _ = surveys
    for params in ({"from": "last week"}, {"to": "2024-13-01"}, {"page": "0"}, {"per_page": "1001"}):
        async with session.get("/surveys/s1/responses", params=params) as response:
            assert response.status == 400
            name = next(iter(params))
            assert f"{name}=" in (await response.json())["message"]
    async with session.get("/surveys", params={"per_page": "x"}) as response:
        assert response.status == 400


async def test_bearer_token_is_required_when_set(surveys: Http) -> None:
    session, api = surveys
    api.token = "survey-token"
    async with session.get("/surveys") as response:
        assert response.status == 401
    async with session.get("/surveys", headers={"Authorization": "Bearer survey-token"}) as response:
        assert response.status == 200


def test_standalone_command_serves_until_killed() -> None:
    command = [sys.executable, "-m", "tests.servers.survey_api", "--port", "0", "--surveys", "2", "--responses", "3"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")

            async def count() -> int:
                async with aiohttp.ClientSession(url) as session:
                    return len(await walk(session, "/surveys/s2/responses"))

            assert asyncio.run(count()) == 3
        finally:
            proc.terminate()
        assert proc.wait(10) == 0
