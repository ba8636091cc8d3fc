"""The bulk-job test API itself, over real HTTP on 127.0.0.1: job lifecycle, locator chaining,
forgotten jobs, job and request faults, bearer auth, a 1,000,000-row job served lazily, and the
standalone command."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO
from tests.servers.bulk_api import BulkApi, serve

Http = tuple[aiohttp.ClientSession, BulkApi]


@pytest.fixture
async def bulk() -> AsyncIterator[Http]:
    """A session against a bulk API of 2,500 Account rows with chunks of 1,000."""
    api = BulkApi(rows=2_500, chunk=1_000)
    async with serve(api) as url, aiohttp.ClientSession(url) as session:
        yield session, api


async def create(session: aiohttp.ClientSession, **body: Any) -> str:
    async with session.post("/jobs", json={"query": "SELECT Id FROM Account", **body}) as response:
        assert response.status == 200
        job = await response.json()
    assert job["state"] == "UploadComplete"
    return str(job["id"])


async def state(session: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    """A poll's job info, or ``{"status", "errorCode", "message"}`` for an error."""
    async with session.get(f"/jobs/{job_id}") as response:
        body = await response.json()
        return body if response.status == 200 else {"status": response.status, **body[0]}


async def ready(session: aiohttp.ClientSession, **body: Any) -> str:
    """A job created and polled until ``JobComplete`` (the default 2 polls; 5 at most)."""
    job_id = await create(session, **body)
    polled = [(await state(session, job_id))["state"] for _ in range(5)]
    assert "JobComplete" in polled, polled
    return job_id


async def chunks(session: aiohttp.ClientSession, job_id: str, max_records: int = 0) -> list[list[dict[str, str]]]:
    """Every results chunk of a job, following ``Sforce-Locator`` until ``null``."""
    out: list[list[dict[str, str]]] = []
    locator: str | None = None
    while locator != "null":
        params = {"locator": locator} if locator else {}
        if max_records:
            params["maxRecords"] = str(max_records)
        async with session.get(f"/jobs/{job_id}/results", params=params) as response:
            assert response.status == 200, await response.text()
            rows = list(csv.DictReader(io.StringIO(await response.text())))
            assert response.headers["Sforce-NumberOfRecords"] == str(len(rows))
            locator = response.headers["Sforce-Locator"]
        out.append(rows)
    return out


async def test_job_goes_upload_complete_in_progress_job_complete_and_is_listed(bulk: Http) -> None:
    session, api = bulk
    job_id = await create(session, object="Account")
    async with session.get(f"/jobs/{job_id}/results") as response:
        assert response.status == 400  # not complete yet
        assert (await response.json())[0]["errorCode"] == "INVALIDJOBSTATE"
    assert (await state(session, job_id))["state"] == "InProgress"
    done = await state(session, job_id)
    assert (done["state"], done["numberRecordsProcessed"], done["object"]) == ("JobComplete", 2_500, "Account")
    async with session.get("/jobs") as response:
        assert [j["id"] for j in (await response.json())["records"]] == [job_id]
    assert api.created_count(query="SELECT Id FROM Account") == 1
    assert api.created_count(object="Contact") == 0


async def test_locators_chain_through_every_row_exactly_once(bulk: Http) -> None:
    session, api = bulk
    job_id = await ready(session)
    got = await chunks(session, job_id)
    assert [len(c) for c in got] == [1_000, 1_000, 500]
    assert [r for c in got for r in c] == list(api.truth())
    again = await chunks(session, job_id, max_records=700)  # any chunk size, same rows
    assert [len(c) for c in again] == [700, 700, 700, 400]
    assert [r for c in again for r in c] == list(api.truth())
    first = [k for k in api.locator_requests if k[1] is None]
    assert first == [(job_id, None)] and api.locator_requests[(job_id, None)] == 2
    assert all(n == 1 for r, n in api.request_counts().items() if "/results" in r)  # no chunk asked twice


async def test_since_and_edits_select_the_table_as_it_was_when_the_job_was_created(bulk: Http) -> None:
    session, api = bulk
    api.remove(2_400)
    api.update(10, Name="Renamed", LastModifiedDate="2024-01-03T00:00:00.000+0000")
    job_id = await ready(session, since="2024-01-02T16:00:00Z")  # rows after minute 2,400, and row 10
    api.remove(2_450)  # after creation: not seen by that job
    rows = [r for c in await chunks(session, job_id) for r in c]
    assert rows[0] == {**list(api.truth())[10], "Name": "Renamed"}
    assert [r["Id"] for r in rows[1:]] == [f"001{i:015d}" for i in range(2_401, 2_500)]
    assert (await state(session, job_id))["numberRecordsProcessed"] == 100


async def test_forgotten_and_restarted_jobs_answer_404(bulk: Http) -> None:
    session, api = bulk
    first, second = await create(session), await create(session)
    api.forget(first)
    assert (await state(session, first))["status"] == 404
    assert (await state(session, second))["state"] == "InProgress"
    api.restart()
    async with session.get(f"/jobs/{second}/results") as response:
        assert response.status == 404
    assert await create(session) not in (first, second)
    assert len(api.created) == 3


async def test_job_faults_fail_forget_and_slow_jobs(bulk: Http) -> None:
    session, api = bulk
    api.job_faults += [{"query": "Contact", "fail": "INVALID_FIELD: no such column"},
                       {"forget_after_polls": 1}, {"polls": 4}, {"seconds": 3600}]
    failing = await create(session, query="SELECT Id FROM Contact")
    assert (await state(session, failing))["state"] == "InProgress"
    failed = await state(session, failing)
    assert (failed["state"], failed["errorMessage"]) == ("Failed", "INVALID_FIELD: no such column")
    async with session.get(f"/jobs/{failing}/results") as response:
        assert response.status == 400
    lost = await create(session)
    assert (await state(session, lost))["state"] == "InProgress"
    assert (await state(session, lost))["status"] == 404
    slow = await create(session)
    assert [(await state(session, slow))["state"] for _ in range(4)] == ["InProgress"] * 3 + ["JobComplete"]
    slower = await create(session)  # ready in an hour: every poll now says InProgress
    assert {(await state(session, slower))["state"] for _ in range(5)} == {"InProgress"}


async def test_abort_by_patch_and_delete(bulk: Http) -> None:
    session, _ = bulk
    job_id = await create(session)
    async with session.patch(f"/jobs/{job_id}", json={"state": "Open"}) as response:
        assert response.status == 400
    async with session.patch(f"/jobs/{job_id}", json={"state": "Aborted"}) as response:
        assert (await response.json())["state"] == "Aborted"
    assert (await state(session, job_id))["state"] == "Aborted"
    async with session.get(f"/jobs/{job_id}/results") as response:
        assert response.status == 400
    async with session.delete(f"/jobs/{job_id}") as response:
        assert response.status == 204
    assert (await state(session, job_id))["status"] == 404


async def test_request_faults_target_method_path_and_locator(bulk: Http) -> None:
    session, api = bulk
    job_id = await ready(session)
    second = (await chunks(session, job_id))[1]
    locator = next(k[1] for k in api.locator_requests if k[1] is not None)
    api.faults += [{"status": 429, "retry_after": "3", "path": f"/jobs/{job_id}/results", "query": locator},
                   {"truncate": True, "query": locator}, {"status": 503, "method": "POST"}]
    async with session.get(f"/jobs/{job_id}/results") as response:
        assert response.status == 200  # the first chunk is not targeted
    async with session.get(f"/jobs/{job_id}/results", params={"locator": locator}) as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "3")
    async with session.get(f"/jobs/{job_id}/results", params={"locator": locator}) as response:
        cut = await response.text()
        assert response.headers["Sforce-Locator"] != "null" and response.content_type == "text/csv"
    full = "\n".join([",".join(api.columns), *(",".join(r.values()) for r in second)]) + "\n"
    assert cut == full[: len(full.encode()) // 2]
    async with session.post("/jobs", json={"query": "q"}) as response:
        assert response.status == 503
    assert api.faults == []
    api.faults.append({"reset": True, "path": "/jobs", "repeat": True})
    for _ in range(2):
        with pytest.raises(aiohttp.ClientError):
            await state(session, job_id)
    assert len(api.faults) == 1


async def test_cut_expired_html_and_any_body_faults(bulk: Http) -> None:
    session, api = bulk
    job_id = await ready(session)
    api.faults += [{"cut": True, "path": "/jobs/", "query": "maxRecords"}, {"expired": True}, {"html": True},
                   {"body": "Id\n1,2,3\n", "content_type": "text/csv"}]
    async with session.get(f"/jobs/{job_id}/results", params={"maxRecords": "10"}) as response:
        assert response.headers["Sforce-NumberOfRecords"] == "10"
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # half the announced body, then the connection closes
    async with session.get("/jobs") as response:
        assert response.status == 401 and "invalid_token" in response.headers["WWW-Authenticate"]
    async with session.get("/jobs") as response:
        assert (response.status, response.content_type) == (200, "text/html")
    async with session.get("/jobs") as response:
        assert (response.status, await response.text()) == (200, "Id\n1,2,3\n")
    assert api.faults == []


async def test_jobs_are_counted_per_body(bulk: Http) -> None:
    session, api = bulk
    for since in ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"):
        await create(session, since=since)
    counts = api.job_counts()
    assert sorted(counts.values()) == [1, 2]
    assert counts['{"query":"SELECT Id FROM Account","since":"2024-01-01T00:00:00Z"}'] == 2
    assert api.created_count(since="2024-01-02T00:00:00Z") == 1


async def test_bad_bodies_and_locators_are_refused_naming_the_request(bulk: Http) -> None:
    session, _ = bulk
    for body in ([1], {"query": 3}, {"query": "q", "since": "yesterday"}):
        async with session.post("/jobs", json=body) as response:
            assert response.status == 400
            assert "POST /jobs" in (await response.json())[0]["message"]
    job_id = await ready(session)
    for params in ({"locator": "nope!"}, {"maxRecords": "0"}):
        async with session.get(f"/jobs/{job_id}/results", params=params) as response:
            assert response.status == 400
            assert f"/jobs/{job_id}/results?" in (await response.json())[0]["message"]


async def test_chaos_is_drawn_from_the_seed_not_from_arrival_order() -> None:
    seen: list[list[int]] = []
    for _ in range(2):
        api = BulkApi(rows=10)
        api.chaos(0.5, seed=7, kinds=({"status": 500}, {"status": 503}))
        async with serve(api) as url, aiohttp.ClientSession(url) as session:
            statuses = []
            for n in range(20):
                async with session.get(f"/jobs/x{n}") as response:
                    statuses.append(response.status)
        seen.append(statuses)
    assert seen[0] == seen[1] and {500, 503, 404} <= set(seen[0])


async def test_bearer_token_is_required_when_set(bulk: Http) -> None:
    session, api = bulk
    api.token = "t0ken"
    async with session.get("/jobs") as response:
        assert response.status == 401
    async with session.get("/jobs", headers={"Authorization": "Bearer t0ken"}) as response:
        assert response.status == 200


async def test_a_million_row_job_is_served_one_chunk_at_a_time() -> None:
    api = BulkApi(rows=1_000_000)
    async with serve(api) as url, aiohttp.ClientSession(url) as session:
        job_id = await ready(session)
        assert api.generated == 0  # creating and completing a job generates no row
        locator, total, chunks_seen = "", 0, 0
        while locator != "null":
            params = {"locator": locator, "maxRecords": "10000"} if locator else {"maxRecords": "10000"}
            async with session.get(f"/jobs/{job_id}/results", params=params) as response:
                total += (await response.text()).count("\n") - 1
                locator = response.headers["Sforce-Locator"]
            chunks_seen += 1
            assert api.most_generated <= 10_001  # one chunk and one look-ahead row, per response
    assert (total, chunks_seen) == (1_000_000, 100)
    assert api.generated == 1_000_000 + 99  # each row once, plus the look-ahead rows


def test_standalone_command_serves_until_killed() -> None:
    command = [sys.executable, "-m", "tests.servers.bulk_api", "--port", "0", "--rows", "30", "--chunk", "20",
               "--polls", "1"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")

            async def walk() -> list[int]:
                async with aiohttp.ClientSession(url) as session:
                    return [len(c) for c in await chunks(session, await ready(session))]

            assert asyncio.run(walk()) == [20, 10]
        finally:
            proc.terminate()
        assert proc.wait(10) == 0
