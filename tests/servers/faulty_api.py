"""Our own REST test API with fault injection (aiohttp), for the REST connector's tests and benches.

Ground truth is :attr:`FaultyApi.items` (id -> record with an increasing integer ``updated``) and
:attr:`FaultyApi.changes` (the delta stream, deletions included). Its paging code is written
independently of the client's paginators (no shared code). Endpoints (all take ``since``: strict
``updated > since``):

==========================  ===================================================================
``GET /items/page``         ``page`` (from 1), ``per_page``; body ``{"data", "total"}``
``GET /items/offset``       ``offset``, ``limit``; body ``{"data"}``
``GET /items/cursor``       ``after`` (opaque); body ``{"data", "next_cursor"}``
``GET /items/link``         ``page``, ``per_page``; ``Link: <..>; rel="next"``
``GET /items/next``         ``page``, ``per_page``; relative ``links.next`` in the body
``GET /items/token``        ``token``; next token in the ``X-Next-Token`` header
``GET /items/{id}``         one record or 404 (parameterized input)
``GET /changes``            delta stream: ``since``, ``limit``; deletes as ``{"deleted": true}``
``GET /broken/same``        ignores ``page`` (always page 1)
``GET /broken/loop``        next link points back to page 1
``GET /broken/cursor``      returns the cursor it was sent
``POST /writes``            appends the JSON body to :attr:`FaultyApi.writes` (egress), echoes it
``PATCH /writes/{id}``      the same, with ``id`` added
``POST /oauth/token``       client_credentials / refresh_token grants, tokens expire after
                            :attr:`token_ttl` seconds or :attr:`token_max_uses` requests,
                            refresh tokens rotate
==========================  ===================================================================

Faults are queued in :attr:`FaultyApi.faults` and consumed one per matching request, in order:
``{"status": 503}``, ``{"status": 429, "retry_after": "1"}``, ``{"reset": True}`` (connection
closed without a response), ``{"delay": 2.0}`` (slow response), ``{"truncate": True}`` (JSON cut in
half, consistent Content-Length), ``{"cut": True}`` (connection closed mid-body), ``{"html": True}``
(an HTML error page with status 200), ``{"body": "..", "content_type": ".."}`` (any body with
status 200), ``{"empty": True}`` (a page without records); each may carry
``"path"``: a path prefix it applies to, and ``"query"``: a substring of the query string.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

FAULT = web.RequestKey("fault", dict)
MIXED: tuple[dict[str, Any], ...] = (
    {"status": 500}, {"status": 503}, {"status": 429, "retry_after": "0.2"}, {"reset": True},
    {"truncate": True}, {"expired": True},
)


class FaultyApi:
    """State and behaviour of the test API; see the module docstring."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.changes: list[dict[str, Any]] = []
        self.clock = 0
        self.faults: list[dict[str, Any]] = []
        self.latency = 0.0
        self.requests: list[str] = []
        self.writes: list[Any] = []  # bodies received by POST/PATCH /writes (done even if cut)
        self.auth: str | None = None  # None, "oauth", "basic", "api_key"
        self.client = ("client-1", "s3cret")
        self.tokens: dict[str, float] = {}
        self.token_uses: dict[str, int] = {}
        self.token_max_uses: int | None = None  # a token expires after this many requests
        self.refresh_tokens: set[str] = {"refresh-0"}
        self.token_ttl = 3600.0
        self.token_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._sorted: list[dict[str, Any]] | None = None
        self.fault_rate = 0.0
        self.fault_seed = 0
        self.fault_kinds: tuple[dict[str, Any], ...] = MIXED
        self.drawn: list[dict[str, Any]] = []  # the random faults served, in order
        self._asked: dict[str, int] = {}

    def chaos(self, rate: float, seed: int, kinds: tuple[dict[str, Any], ...] = MIXED) -> None:
        """Serve a fault from ``kinds`` to a fraction ``rate`` of requests (seeded, see module)."""
        self.fault_rate, self.fault_seed, self.fault_kinds = rate, seed, kinds

    # ---- ground truth -------------------------------------------------------------------------
    def upsert(self, item_id: str, **fields: Any) -> dict[str, Any]:
        self.clock += 1
        record = {"id": item_id, **fields, "updated": self.clock}
        self.items[item_id] = record
        self.changes.append(dict(record))
        self._sorted = None
        return record

    def delete(self, item_id: str) -> None:
        self.clock += 1
        del self.items[item_id]
        self.changes.append({"id": item_id, "deleted": True, "updated": self.clock})
        self._sorted = None

    def ordered(self, since: int | None) -> list[dict[str, Any]]:
        if self._sorted is None:
            self._sorted = sorted(self.items.values(), key=lambda r: (r["updated"], r["id"]))
        rows = self._sorted
        if since is None:
            return rows
        lo, hi = 0, len(rows)  # first index with updated > since
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[mid]["updated"] <= since:
                lo = mid + 1
            else:
                hi = mid
        return rows[lo:]

    # ---- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/oauth/token", self._token)
        r.add_get("/items/page", self._page)
        r.add_get("/items/offset", self._offset)
        r.add_get("/items/cursor", self._cursor)
        r.add_get("/items/link", self._link)
        r.add_get("/items/next", self._next)
        r.add_get("/items/token", self._token_paging)
        r.add_get("/items/{id}", self._one)
        r.add_get("/changes", self._changes)
        r.add_get("/broken/same", self._broken_same)
        r.add_get("/broken/loop", self._broken_loop)
        r.add_get("/broken/cursor", self._broken_cursor)
        r.add_post("/writes", self._write)
        r.add_patch("/writes/{id}", self._write)
        return app

    def _take_fault(self, request: web.Request) -> dict[str, Any] | None:
        for i, fault in enumerate(self.faults):
            if request.path.startswith(fault.get("path", "")) and fault.get("query", "") in request.query_string:
                return self.faults.pop(i)
        return self._draw(request) if self.fault_rate else None

    def _draw(self, request: web.Request) -> dict[str, Any] | None:
        key = f"{request.method} {request.path_qs}"
        n = self._asked[key] = self._asked.get(key, 0) + 1
        rng = random.Random(f"{self.fault_seed}:{key}:{n}")
        if rng.random() >= self.fault_rate:
            return None
        fault = dict(rng.choice(self.fault_kinds))
        self.drawn.append(fault)
        return fault

    def _authorized(self, request: web.Request) -> bool:
        if self.auth is None or request.path == "/oauth/token":
            return True
        given = request.headers.get("Authorization", "")
        if self.auth == "oauth":
            token = given.removeprefix("Bearer ")
            expiry = self.tokens.get(token)
            uses = self.token_uses[token] = self.token_uses.get(token, 0) + 1
            if self.token_max_uses is not None and uses > self.token_max_uses:
                return False
            return expiry is not None and time.monotonic() < expiry
        if self.auth == "basic":
            pair = base64.b64encode(f"{self.client[0]}:{self.client[1]}".encode()).decode()
            return given == f"Basic {pair}"
        return request.query.get("api_key") == self.client[1]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            fault = self._take_fault(request) if request.path != "/oauth/token" else None
            if fault and "delay" in fault:
                await asyncio.sleep(fault["delay"])
            if fault and fault.get("reset"):
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # nothing is sent
            if fault and "status" in fault:
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                return web.json_response({"error": "injected"}, status=fault["status"], headers=headers)
            if fault and "body" in fault:
                return web.Response(text=fault["body"], content_type=fault.get("content_type", "text/plain"))
            if fault and fault.get("expired"):
                return web.json_response({"error": "invalid_token"}, status=401, headers={
                    "WWW-Authenticate": 'Bearer error="invalid_token", error_description="token expired"'})
            if fault and fault.get("html"):
                return web.Response(text="<!DOCTYPE html><html><body>Service down</body></html>",
                                    content_type="text/html")
            if not self._authorized(request):
                return web.json_response({"error": "unauthorized"}, status=401)
            request[FAULT] = fault
            response = await handler(request)
            if fault and fault.get("truncate") and isinstance(response, web.Response):
                body = response.body or b""
                assert isinstance(body, bytes)
                return web.Response(body=body[: len(body) // 2], content_type="application/json")
            if fault and fault.get("cut") and isinstance(response, web.Response):
                body = response.body
                assert isinstance(body, bytes)
                stream = web.StreamResponse(headers={"Content-Length": str(len(body)),
                                                     "Content-Type": "application/json"})
                await stream.prepare(request)
                await stream.write(body[: len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return stream
            return response
        finally:
            self.in_flight -= 1

    @staticmethod
    def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)

    def _rows(self, request: web.Request) -> list[dict[str, Any]]:
        since = request.query.get("since") or request.headers.get("X-Since")
        rows = self.ordered(int(since) if since else None)
        return [] if request.get(FAULT) and request[FAULT].get("empty") else rows

    @staticmethod
    def _int(request: web.Request, name: str, default: int) -> int:
        return int(request.query.get(name, default))

    async def _page(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        page, per = self._int(request, "page", 1), self._int(request, "per_page", 100)
        return self._json({"data": rows[(page - 1) * per : page * per], "total": len(rows)})

    async def _offset(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        off, limit = self._int(request, "offset", 0), self._int(request, "limit", 100)
        return self._json({"data": rows[off : off + limit]})

    async def _cursor(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        after = request.query.get("after")
        start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        limit = self._int(request, "limit", 100)
        chunk = rows[start : start + limit]
        more = start + limit < len(rows)
        cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None
        return self._json({"data": chunk, "next_cursor": cursor})

    def _numbered(self, request: web.Request) -> tuple[list[dict[str, Any]], int, int, bool]:
        rows = self._rows(request)
        page, per = self._int(request, "page", 1), self._int(request, "per_page", 100)
        return rows[(page - 1) * per : page * per], page, per, page * per < len(rows)

    def _self_query(self, request: web.Request, page: int) -> str:
        query = dict(request.query)
        query["page"] = str(page)
        return request.rel_url.with_query(query).path_qs

    async def _link(self, request: web.Request) -> web.Response:
        chunk, page, _, more = self._numbered(request)
        headers = {"Link": f'<{self.url}{self._self_query(request, 1)}>; rel="first"'}
        if more:
            headers["Link"] += f', <{self.url}{self._self_query(request, page + 1)}>; rel="next"'
        return self._json(chunk, headers)

    async def _next(self, request: web.Request) -> web.Response:
        chunk, page, _, more = self._numbered(request)
        nxt = self._self_query(request, page + 1) if more else None
        return self._json({"data": chunk, "links": {"next": nxt}})

    async def _token_paging(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        token = request.query.get("token")
        start = int(token, 16) if token else 0
        chunk = rows[start : start + 50]
        headers = {"X-Next-Token": format(start + 50, "x")} if start + 50 < len(rows) else {}
        return self._json({"data": chunk}, headers)

    async def _one(self, request: web.Request) -> web.Response:
        record = self.items.get(request.match_info["id"])
        if record is None:
            return web.json_response({"error": "not found"}, status=404)
        return self._json(record, {"X-Item-Version": str(record["updated"])})

    async def _changes(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0") or 0)
        limit = self._int(request, "limit", 100)
        events = [c for c in self.changes if c["updated"] > since][:limit]
        if request.get(FAULT) and request[FAULT].get("empty"):
            events = []
        return self._json({"data": events})

    async def _broken_same(self, request: web.Request) -> web.Response:
        return self._json({"data": self.ordered(None)[:10]})

    async def _broken_loop(self, request: web.Request) -> web.Response:
        chunk, page, _, _ = self._numbered(request)
        return self._json({"data": chunk, "links": {"next": self._self_query(request, 1 if page > 1 else 2)}})

    async def _broken_cursor(self, request: web.Request) -> web.Response:
        start = len(self.requests) % 5 * 5  # fresh records each time, the cursor never moves
        rows = self.ordered(None)[start : start + 5]
        return self._json({"data": rows, "next_cursor": request.query.get("after") or "abc"})

    async def _write(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if "id" in request.match_info:
            body = {"id": request.match_info["id"], **body}
        self.writes.append(body)
        return self._json({"written": body, "count": len(self.writes)}, {"X-Write-Count": str(len(self.writes))})

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if (form.get("client_id"), form.get("client_secret")) != self.client:
            return web.json_response({"error": "invalid_client"}, status=401)
        body: dict[str, Any] = {}
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.refresh_tokens.discard(str(form["refresh_token"]))
            rotated = f"refresh-{secrets.token_hex(4)}"
            self.refresh_tokens.add(rotated)
            body["refresh_token"] = rotated
        elif form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_hex(8)
        self.tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response({**body, "access_token": token, "token_type": "bearer",
                                  "expires_in": self.token_ttl})


@asynccontextmanager
async def serve(api: FaultyApi) -> AsyncIterator[str]:
    """Serve ``api`` on 127.0.0.1 (ephemeral port); yields its base URL."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.url = f"http://127.0.0.1:{port}"
    try:
        yield api.url
    finally:
        await runner.cleanup()


def main() -> None:
    """``python -m tests.servers.faulty_api --items N --latency S``: serve on an ephemeral port of
    127.0.0.1 in its own process (benchmarks); prints the base URL, then serves until killed."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    api = FaultyApi()
    for n in range(args.items):
        api.upsert(f"i{n:07}", name=f"item {n}", value=n, tags=["a", "b"], note="x" * 40)
    api.latency = args.latency

    async def run() -> None:
        async with serve(api) as url:
            print(url, flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
