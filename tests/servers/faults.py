"""Fault injection, request log and bearer auth shared by the bulk-job and survey test APIs.

:class:`FaultyServer` is the mechanism of :mod:`tests.servers.faulty_api` as a base class (aiohttp
middleware), so :mod:`tests.servers.bulk_api` and :mod:`tests.servers.survey_api` inject faults the
same way. Faults are queued in :attr:`FaultyServer.faults` and consumed one per matching request,
in order:

========================================  =========================================================
``{"status": 503}``                       that status with a JSON error body
``{"status": 429, "retry_after": "1"}``   the same with a ``Retry-After`` header (seconds)
``{"reset": True}``                       connection closed without a response
``{"delay": 2.0}``                        the response comes after that many seconds
``{"truncate": True}``                    body cut in half (JSON or CSV), consistent Content-Length
``{"cut": True}``                         connection closed after half the announced body
``{"html": True}``                        an HTML error page with status 200
``{"body": "..", "content_type": ".."}``  any body with status 200
``{"expired": True}``                     401 ``invalid_token`` with ``WWW-Authenticate``
``{"lost": True}``                        the handler runs (a write is applied), then the
                                          connection is closed without its response
``{"delay_after": 2.0}``                  the handler runs, its response comes that many seconds
                                          later
========================================  =========================================================

Each fault may carry ``"path"`` (a path prefix it applies to), ``"query"`` (a substring of the
query string) and ``"method"`` (``"GET"``, ``"POST"``, ...); ``"repeat": True`` keeps it in the
queue, so every matching request gets it until a test removes it (``{"status": 500, "path":
"/surveys/s3/", "repeat": True}``: all requests for survey ``s3`` fail). :meth:`FaultyServer.chaos`
also faults a share of all requests, drawn per request from the seed, the method, the path with
query and how often that request was asked (not from arrival order), as faulty_api does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

MIXED: tuple[dict[str, Any], ...] = (
    {"status": 500}, {"status": 503}, {"status": 429, "retry_after": "0.2"}, {"reset": True},
    {"truncate": True}, {"expired": True},
)


class FaultyServer:
    """Fault queue, seeded chaos, request log and optional bearer token of a test API.

    Subclasses add their routes in :meth:`routes` and may shape error bodies in :meth:`error`.
    """

    def __init__(self) -> None:
        self.faults: list[dict[str, Any]] = []
        self.latency = 0.0  # seconds added to every response
        self.token: str | None = None  # when set, every request needs ``Authorization: Bearer <token>``
        self.requests: list[str] = []  # "METHOD /path?query", in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self.fault_rate = 0.0
        self.fault_seed = 0
        self.fault_kinds: tuple[dict[str, Any], ...] = MIXED
        self.drawn: list[dict[str, Any]] = []  # the random faults served, in order
        self._asked: Counter[str] = Counter()

    def chaos(self, rate: float, seed: int, kinds: tuple[dict[str, Any], ...] = MIXED) -> None:
        """Serve a fault from ``kinds`` to a fraction ``rate`` (0..1) of requests, drawn from ``seed``."""
        self.fault_rate, self.fault_seed, self.fault_kinds = rate, seed, kinds

    def request_counts(self) -> Counter[str]:
        """How often each ``"METHOD /path?query"`` was requested."""
        return Counter(self.requests)

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add the API's handlers to ``router``."""
        raise NotImplementedError

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        """The error response of this API: ``{"error": code, "message": message}`` by default."""
        return web.json_response({"error": code, "message": message}, status=status, headers=headers)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        self.routes(app.router)
        return app

    # ---- faults -------------------------------------------------------------------------------
    def _take_fault(self, request: web.Request) -> dict[str, Any] | None:
        for i, fault in enumerate(self.faults):
            if (request.path.startswith(fault.get("path", "")) and fault.get("query", "") in request.query_string
                    and fault.get("method", request.method) == request.method):
                return fault if fault.get("repeat") else self.faults.pop(i)
        return self._draw(request) if self.fault_rate else None

    def _draw(self, request: web.Request) -> dict[str, Any] | None:
        key = f"{request.method} {request.path_qs}"
        self._asked[key] += 1
        rng = random.Random(f"{self.fault_seed}:{key}:{self._asked[key]}")
        if rng.random() >= self.fault_rate:
            return None
        fault = dict(rng.choice(self.fault_kinds))
        self.drawn.append(fault)
        return fault

    def _before(self, request: web.Request, fault: dict[str, Any]) -> web.Response | None:
        """The response a fault gives instead of the handler's, if any."""
        if fault.get("reset"):
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing is sent
        if "status" in fault:
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
            return self.error(fault["status"], "injected", "injected fault", headers)
        if "body" in fault:
            return web.Response(text=fault["body"], content_type=fault.get("content_type", "text/plain"))
        if fault.get("expired"):
            return self.error(401, "invalid_token", "token expired", {
                "WWW-Authenticate": 'Bearer error="invalid_token", error_description="token expired"'})
        if fault.get("html"):
            return web.Response(text="<!DOCTYPE html><html><body>Service down</body></html>",
                                content_type="text/html")
        return None

    @staticmethod
    async def _after(request: web.Request, fault: dict[str, Any], response: web.StreamResponse) -> web.StreamResponse:
        """The handler's response, cut as the fault says."""
        if not isinstance(response, web.Response) or not (fault.get("truncate") or fault.get("cut")):
            return response
        body = response.body
        assert isinstance(body, bytes)
        content_type = response.content_type
        if fault.get("truncate"):
            return web.Response(body=body[: len(body) // 2], content_type=content_type, headers=_custom(response))
        stream = web.StreamResponse(headers={**_custom(response), "Content-Length": str(len(body)),
                                             "Content-Type": content_type})
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()
        return stream

    def _authorized(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path_qs}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            fault = self._take_fault(request) or {}
            if "delay" in fault:
                await asyncio.sleep(fault["delay"])
            early = self._before(request, fault)
            if early is not None:
                return early
            if not self._authorized(request):
                return self.error(401, "unauthorized", "missing or wrong bearer token")
            response = await handler(request)
            if "delay_after" in fault:
                await asyncio.sleep(fault["delay_after"])
            if fault.get("lost"):
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # applied, but nothing is sent
            return await self._after(request, fault, response)
        finally:
            self.in_flight -= 1


def instant(value: Any) -> datetime:
    """A datetime or ISO 8601 string as an aware datetime (naive means UTC).

    Raises:
        ValueError: not ISO 8601.
    """
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _custom(response: web.Response) -> dict[str, str]:
    """The headers a handler set itself (e.g. ``Sforce-Locator``), kept on a cut response."""
    skip = {"content-type", "content-length", "date", "server"}
    return {k: v for k, v in response.headers.items() if k.lower() not in skip}


@asynccontextmanager
async def serve(server: FaultyServer, port: int = 0) -> AsyncIterator[str]:
    """Serve ``server`` on 127.0.0.1:``port`` (0: an ephemeral port); yields its base URL."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    assert isinstance(site._server, asyncio.base_events.Server)
    bound = site._server.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{bound}"
    try:
        yield server.url
    finally:
        await runner.cleanup()


def run_forever(server: FaultyServer, port: int) -> None:
    """Serve ``server`` on 127.0.0.1:``port`` in this process, print its URL, serve until SIGTERM/Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    async def run() -> None:
        async with serve(server, port) as url:
            print(url, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
