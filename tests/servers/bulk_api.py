"""A bulk-job test API in the style of Salesforce Bulk API 2.0 query jobs (aiohttp), for DIL's
asynchronous ingestion (request, poll, extract; ``shared/reference/dil.md`` section 5.2).

Ground truth is a table of :attr:`BulkApi.rows` records made lazily by :attr:`BulkApi.generator`
(row index -> record; default :func:`account`: ``Id``, ``Name``, ``AnnualRevenue``,
``NumberOfEmployees``, ``IsActive``, ``LastModifiedDate``, one minute apart from 2024-01-01), with
:meth:`BulkApi.update` / :meth:`BulkApi.remove` as an overlay. A job selects the table as it is
when the job is created (rows count and overlay copied, never the rows themselves), optionally
only records whose :attr:`BulkApi.since_field` is strictly after the body's ``since``. Written
independently of any client code. Endpoints:

=========================================  ========================================================
``POST /jobs``                             body ``{"query": str, "object"?, "since"?: ISO 8601}``;
                                           returns ``{"id", "state": "UploadComplete", ...}``
``GET /jobs``                              ``{"done": true, "records": [job, ...]}``
``GET /jobs/{id}``                         a poll: ``{"id", "state", ...}``; ``InProgress`` until the
                                           :attr:`ready_after_polls`-th poll and
                                           :attr:`ready_after_s` seconds, then ``JobComplete``
                                           (``numberRecordsProcessed``) or ``Failed``
                                           (``errorMessage``); 404 for an unknown id
``GET /jobs/{id}/results``                 ``locator`` (opaque, absent for the first chunk),
                                           ``maxRecords`` (default :attr:`chunk`): CSV, header row
                                           then rows; headers ``Sforce-Locator`` (next chunk, or
                                           ``null`` on the last) and ``Sforce-NumberOfRecords``;
                                           400 before ``JobComplete`` or for a bad locator
``PATCH /jobs/{id}``                       ``{"state": "Aborted"}`` aborts (results then 400)
``DELETE /jobs/{id}``                      deletes the job (204; then 404)
=========================================  ========================================================

Errors are Salesforce-shaped: ``[{"errorCode": .., "message": ..}]``. Counters for tests:
:attr:`BulkApi.created` (every job ever created), :meth:`BulkApi.job_counts` (jobs created per
body), :meth:`BulkApi.created_count` (jobs whose body has given values), :attr:`BulkApi.requests`
(``"METHOD /path?query"``), :attr:`BulkApi.locator_requests` (``(job id, locator or None)`` ->
requests), :attr:`BulkApi.generated` and :attr:`BulkApi.most_generated` (records generated in all
and by one response: a chunk, plus one looked ahead for the next locator, never the whole job).

Request faults are those of :mod:`tests.servers.faults` (queued by method, path prefix and query
substring; seeded chaos). Job faults are queued in :attr:`BulkApi.job_faults` and consumed one per
created job whose canonical JSON body contains ``"query"`` (a substring; default: any job):
``{"fail": "message"}`` (the job ends ``Failed``), ``{"forget_after_polls": n}`` (404 from poll
``n + 1`` on, as after a server restart), ``{"polls": n}`` / ``{"seconds": s}`` (a slow job).
:meth:`BulkApi.forget` and :meth:`BulkApi.restart` forget one job or all of them. With
:attr:`token` set, every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import functools
import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from tests.servers.faults import FaultyServer, instant, run_forever, serve

__all__ = ["BulkApi", "Job", "account", "serve"]

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
Record = dict[str, Any]


def account(i: int) -> Record:
    """Row ``i`` of the default table: an Account with typed columns, ``LastModifiedDate`` ``i``
    minutes after 2024-01-01 (Salesforce's text form, made without datetime arithmetic: fast)."""
    days, minute = divmod(i, 1440)
    return {"Id": f"001{i:015d}", "Name": f"Account {i}", "AnnualRevenue": i * 12.5,
            "NumberOfEmployees": i % 500, "IsActive": i % 3 != 0,
            "LastModifiedDate": f"{_day(days)}T{minute // 60:02}:{minute % 60:02}:00.000+0000"}


@functools.lru_cache(maxsize=8)
def _day(days: int) -> str:
    return (EPOCH + timedelta(days=days)).date().isoformat()


def csv_value(value: Any) -> str:
    """A value as Salesforce writes it in CSV: ``true``/``false``, empty for null, datetimes
    ``2024-01-01T00:00:00.000+0000``, text as it is."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "+0000"
    return str(value)


@dataclass
class Job:
    """One query job: its body, the table as it was at creation, its polls and state."""

    id: str
    body: dict[str, Any]
    created: str
    rows: int
    edits: dict[int, Record | None]
    since: datetime | None
    polls_needed: int
    ready_at: float  # time.monotonic() from which it may complete
    fail: str | None = None
    forget_after_polls: int | None = None
    polls: int = 0
    state: str = "UploadComplete"
    processed: int = 0

    def info(self) -> dict[str, Any]:
        info = {"id": self.id, "operation": "query", "object": self.body.get("object"), "state": self.state,
                "createdDate": self.created}
        if self.state == "JobComplete":
            info["numberRecordsProcessed"] = self.processed
        if self.state == "Failed":
            info["errorMessage"] = self.fail
        return info


class BulkApi(FaultyServer):
    """State and behaviour of the bulk-job API; see the module docstring."""

    def __init__(self, rows: int = 0, chunk: int = 10_000, generator: Callable[[int], Record] = account) -> None:
        super().__init__()
        self.rows = rows
        self.chunk = chunk  # records per results chunk when the request gives no maxRecords
        self.generator = generator
        self.columns = list(generator(0))
        self.since_field = "LastModifiedDate"
        self.edits: dict[int, Record | None] = {}  # row index -> replacement record, or None: removed
        self.ready_after_polls = 2
        self.ready_after_s = 0.0
        self.jobs: dict[str, Job] = {}  # the jobs the server knows
        self.created: list[Job] = []  # every job ever created, in order
        self.job_faults: list[dict[str, Any]] = []
        self.locator_requests: Counter[tuple[str, str | None]] = Counter()
        self.generated = 0
        self.most_generated = 0

    # ---- ground truth -------------------------------------------------------------------------
    def update(self, i: int, **fields: Any) -> Record:
        """Change fields of row ``i`` for jobs created from now on; returns the new record."""
        record = {**(self.record(i, self.edits) or {}), **fields}
        self.edits[i] = record
        return record

    def remove(self, i: int) -> None:
        """Remove row ``i`` from jobs created from now on."""
        self.edits[i] = None

    def record(self, i: int, edits: dict[int, Record | None], counted: bool = False) -> Record | None:
        """Row ``i`` under ``edits`` (None: removed); ``counted``: add it to :attr:`generated`."""
        if i in edits:
            return edits[i]
        self.generated += counted
        return self.generator(i)

    def truth(self, since: str | None = None) -> Iterator[dict[str, str]]:
        """The current table as CSV rows (column -> text), lazily; ``since`` filters as a job would."""
        moment = instant(since) if since else None
        for _, row in self._select(self.rows, dict(self.edits), moment, 0):
            yield {c: csv_value(row.get(c)) for c in self.columns}

    def forget(self, job_id: str) -> None:
        """Forget one job: it answers 404 from now on."""
        self.jobs.pop(job_id, None)

    def restart(self) -> None:
        """Forget every job, as a server restart would (ids of new jobs stay unique)."""
        self.jobs.clear()

    def job_counts(self) -> Counter[str]:
        """Jobs ever created per body (its canonical JSON, sorted keys): one job per unit means every count is 1."""
        return Counter(_canonical(job.body) for job in self.created)

    def created_count(self, **match: Any) -> int:
        """Jobs ever created whose body has every ``key=value`` of ``match`` (none: all jobs)."""
        return sum(all(job.body.get(k) == v for k, v in match.items()) for job in self.created)

    def _select(self, rows: int, edits: dict[int, Record | None], since: datetime | None,
                start: int, counted: bool = False) -> Iterator[tuple[int, Record]]:
        """``(index, record)`` of the rows from ``start`` that exist and pass ``since``, lazily."""
        for i in range(start, rows):
            row = self.record(i, edits, counted)
            if row is not None and (since is None or instant(row[self.since_field]) > since):
                yield i, row

    def _count(self, job: Job) -> int:
        """Records a job selects: arithmetic without ``since``, else a lazy scan."""
        if job.since is None:
            return job.rows - sum(1 for i, row in job.edits.items() if row is None and i < job.rows)
        return sum(1 for _ in self._select(job.rows, job.edits, job.since, 0))

    # ---- app ----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/jobs", self._create)
        router.add_get("/jobs", self._list)
        router.add_get("/jobs/{id}", self._poll)
        router.add_get("/jobs/{id}/results", self._results)
        router.add_patch("/jobs/{id}", self._abort)
        router.add_delete("/jobs/{id}", self._delete)

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps([{"errorCode": code, "message": message}]), status=status,
                            content_type="application/json", headers=headers)

    def _job_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        text = _canonical(body)
        for i, fault in enumerate(self.job_faults):
            if fault.get("query", "") in text:
                return self.job_faults.pop(i)
        return {}

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.error(400, "INVALID_JSON", "POST /jobs: the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self.error(400, "INVALIDJOB", 'POST /jobs: the body needs "query" (a string)')
        try:
            since = instant(body["since"]) if body.get("since") else None
        except ValueError:
            return self.error(400, "INVALIDJOB", f'POST /jobs: "since" is not ISO 8601: {body["since"]!r}')
        fault = self._job_fault(body)
        job = Job(id=f"750{len(self.created) + 1:015d}", body=body, created=csv_value(datetime.now(UTC)),
                  rows=self.rows, edits=dict(self.edits), since=since,
                  polls_needed=fault.get("polls", self.ready_after_polls),
                  ready_at=time.monotonic() + fault.get("seconds", self.ready_after_s),
                  fail=fault.get("fail"), forget_after_polls=fault.get("forget_after_polls"))
        self.jobs[job.id] = job
        self.created.append(job)
        return self._json(job.info())

    async def _list(self, request: web.Request) -> web.Response:
        return self._json({"done": True, "records": [job.info() for job in self.jobs.values()],
                           "nextRecordsUrl": None})

    def _job(self, request: web.Request) -> Job | web.Response:
        job = self.jobs.get(request.match_info["id"])
        return job if job is not None else self.error(404, "NOT_FOUND", f"{request.path}: no such job")

    async def _poll(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        job.polls += 1
        if job.forget_after_polls is not None and job.polls > job.forget_after_polls:
            self.forget(job.id)
            return self.error(404, "NOT_FOUND", f"{request.path}: no such job")
        if job.state in ("UploadComplete", "InProgress"):
            ready = job.polls >= job.polls_needed and time.monotonic() >= job.ready_at
            job.state = "InProgress" if not ready else "Failed" if job.fail else "JobComplete"
            if job.state == "JobComplete":
                job.processed = self._count(job)
        return self._json(job.info())

    async def _results(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        locator = request.query.get("locator")
        self.locator_requests[(job.id, locator)] += 1
        if job.state != "JobComplete":
            return self.error(400, "INVALIDJOBSTATE", f"{request.path}: job is {job.state}, not JobComplete")
        start = _position(locator)
        try:
            limit = int(request.query.get("maxRecords", self.chunk))
        except ValueError:
            limit = 0
        if start is None or limit < 1:
            return self.error(400, "INVALID_LOCATOR" if start is None else "INVALID_MAXRECORDS",
                              f"{request.path_qs}: bad locator or maxRecords")
        before = self.generated
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        count, following = 0, None
        for i, row in self._select(job.rows, job.edits, job.since, start, counted=True):
            if count == limit:
                following = i
                break
            writer.writerow([csv_value(row.get(c)) for c in self.columns])
            count += 1
        self.most_generated = max(self.most_generated, self.generated - before)
        headers = {"Sforce-Locator": "null" if following is None else _locator(following),
                   "Sforce-NumberOfRecords": str(count)}
        return web.Response(text=out.getvalue(), content_type="text/csv", headers=headers)

    async def _abort(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if body != {"state": "Aborted"}:
            return self.error(400, "INVALIDJOBSTATE", f'PATCH {request.path}: only {{"state": "Aborted"}}')
        if job.state in ("UploadComplete", "InProgress"):
            job.state = "Aborted"
        return self._json(job.info())

    async def _delete(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        self.forget(job.id)
        return web.Response(status=204)

    @staticmethod
    def _json(body: Any) -> web.Response:
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _canonical(body: dict[str, Any]) -> str:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def _locator(position: int) -> str:
    """An opaque locator for a row position (base64 of the number, as Salesforce's look)."""
    return base64.b64encode(str(position).encode()).decode().rstrip("=")


def _position(locator: str | None) -> int | None:
    """The row position of a locator (0 for none), or None for one this server did not make."""
    if not locator:
        return 0
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def main() -> None:
    """``python -m tests.servers.bulk_api --port N --rows R --chunk C``: serve on 127.0.0.1:N
    (0: ephemeral) in its own process; prints the base URL, then serves until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rows", type=int, default=1000, help="rows of the default Account table")
    parser.add_argument("--chunk", type=int, default=10_000, help="records per results chunk by default")
    parser.add_argument("--polls", type=int, default=2, help="polls until a job is JobComplete")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    args = parser.parse_args()
    api = BulkApi(rows=args.rows, chunk=args.chunk)
    api.ready_after_polls, api.latency = args.polls, args.latency
    run_forever(api, args.port)


if __name__ == "__main__":
    main()
