"""A lean HTTP/1.1 server for the parameterized REST bench, run in its own process.

The aiohttp test API (tests/servers/faulty_api.py) costs ~0.5 ms of CPU per request, which on two
cores makes the *server* the bottleneck of a 10,000-call bench; this one is a bare
``asyncio.Protocol`` (a few µs per request), so the bench measures the client.

It is a real HTTP/1.1 server for what the bench sends: persistent connections (closed after a
response only when the request says ``Connection: close`` or is HTTP/1.0 without keep-alive),
request bodies skipped by ``Content-Length`` (chunked requests are refused with 501 and the
connection closed), responses with ``Content-Length``, answered in request order per connection
(pipelining safe). Every response is sent ``latency`` seconds after its request arrived.

Endpoints (same shapes as the test API): ``GET /items/page?page=P&per_page=N`` ->
``{"data": [...], "total": T}`` and ``GET /items/<id>`` -> the record or 404; for the share bench
``POST /records`` (the body is not read) -> 201 ``{"id": "rN"}``, as the target API
(tests/servers/target_api.py) answers a create.

Run: ``python bench/_fast_http.py --items N --latency S``: prints its base URL, serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from urllib.parse import parse_qsl, urlsplit

import orjson


def record(n: int) -> dict[str, object]:
    """Item ``n``, as the test API would serve it."""
    return {"id": f"i{n:07}", "name": f"item {n}", "value": n, "tags": ["a", "b"], "note": "x" * 40,
            "updated": n + 1}


class Items:
    """The served data: ``items`` records, bodies pre-serialized."""

    def __init__(self, items: int) -> None:
        self.records = [record(n) for n in range(items)]
        self.bodies = {r["id"]: orjson.dumps(r) for r in self.records}
        self.created = 0

    def answer(self, method: bytes, target: bytes) -> tuple[int, bytes]:
        """(status, JSON body) for a request."""
        parts = urlsplit(target.decode("latin-1"))
        if method == b"POST" and parts.path == "/records":
            self.created += 1
            return 201, b'{"id": "r%d"}' % self.created
        if method != b"GET":
            return 405, b'{"error": "method not allowed"}'
        if parts.path == "/items/page":
            query = dict(parse_qsl(parts.query))
            size = int(query.get("per_page", 100))
            start = (int(query.get("page", 1)) - 1) * size
            return 200, orjson.dumps({"data": self.records[start : start + size], "total": len(self.records)})
        if parts.path.startswith("/items/"):
            body = self.bodies.get(parts.path[7:])
            return (200, body) if body is not None else (404, b'{"error": "not found"}')
        return 404, b'{"error": "not found"}'


_REASONS = {200: b"OK", 201: b"Created", 404: b"Not Found", 405: b"Method Not Allowed", 400: b"Bad Request",
            501: b"Not Implemented"}


class HttpProtocol(asyncio.Protocol):
    """One connection: parses requests, queues their responses ``latency`` s after arrival."""

    def __init__(self, items: Items, latency: float) -> None:
        self.items, self.latency = items, latency
        self.buffer = b""
        self.pending: deque[list] = deque()  # [ready, response bytes, close after] in request order
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                length = -1
            if length < 0:  # unusable framing: answer 400 and close, as a real server must
                self.buffer = b""
                self._queue(400, b'{"error": "bad Content-Length"}', True)
                return
            if len(self.buffer) < end + 4 + length:
                return  # wait for the rest of the body
            self.buffer = self.buffer[end + 4 + length :]
            request = head[0].split(b" ")
            connection = headers.get(b"connection", b"").lower()
            close = connection == b"close" or (len(request) == 3 and request[2] == b"HTTP/1.0"
                                               and connection != b"keep-alive")
            if len(request) != 3:
                status, body, close = 400, b'{"error": "bad request line"}', True
            elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                status, body, close = 501, b'{"error": "chunked requests not supported"}', True
            else:
                status, body = self.items.answer(request[0], request[1])
            self._queue(status, body, close)
            if close:
                self.buffer = b""
                return

    def _queue(self, status: int, body: bytes, close: bool) -> None:
        response = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
            status, _REASONS[status], len(body), b"Connection: close\r\n" if close else b"", body)
        entry = [False, response, close]
        self.pending.append(entry)
        asyncio.get_running_loop().call_later(self.latency, self._ready, entry)

    def _ready(self, entry: list) -> None:
        entry[0] = True
        while self.pending and self.pending[0][0]:
            _, response, close = self.pending.popleft()
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(response)
            if close:
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(items: int, latency: float) -> None:
    data = Items(items)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(data, latency), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.items, args.latency))
