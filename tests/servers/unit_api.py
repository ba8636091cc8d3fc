"""A test API with one resource per work unit, for cluster tests: ``GET /items/{key}`` answers
``{"data": [{"id": KEY, "request": N}]}``, N counting every request the server answered (so a unit
read twice and committed twice leaves two versions of its entity). :attr:`asked` counts the
requests per key; the in-flight counters, latency and faults are those of
:class:`~tests.servers.faults.FaultyServer` (``max_in_flight``: the most requests served at once)."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from tests.servers.faults import FaultyServer


class UnitApi(FaultyServer):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[str] = Counter()
        self.served = 0

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/items/{key}", self._item)

    async def _item(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.asked[key] += 1
        self.served += 1
        return web.json_response({"data": [{"id": key, "request": self.served}]})
