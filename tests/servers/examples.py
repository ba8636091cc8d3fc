"""Local servers the examples in ``config/examples/`` run against, one per example.

``python -m tests.servers.examples EXAMPLE [--port N]`` (from the repository root, in the venv)
serves the data of :func:`seed` on 127.0.0.1 until SIGTERM or Ctrl-C. Credentials are the
constants below (the README passes them as environment variables, which ``$SECRET(...)``
reads). Two examples run against peers no one here wrote (``tests/servers/real.py``):

==========================  ===========================================================================
``rest-delta-stream``       :class:`~tests.servers.faulty_api.FaultyApi`: ``/changes`` (deletes as
                            ``{"deleted": true}``), OAuth2 client ``sluice`` / :data:`LEDGER_SECRET`
``rest-history``            ``/prices``: ``page``, ``per_page``; body ``{"data", "total"}``
``rest-parameterized``      ``/orders``: ``offset``, ``limit``; body ``{"items"}``;
                            ``/orders/{order_id}/lines``: ``{"lines"}``
``rest-since-rescans``      ``/customers``: ``cursor``, ``limit``, ``updated_after`` (ISO 8601 UTC);
                            body ``{"data", "meta": {"next_cursor"}}``; bearer :data:`CRM_TOKEN`
``rest-sporadic-empty``     json-server 0.17.4 over ``employees`` (it checks no API key)
``rest-raw-reshape``        Datasette over ``articles`` in database ``db``
==========================  ===========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.servers.faulty_api import FaultyApi
from tests.servers.real import JSON_SERVER, VENV_BIN

LEDGER_SECRET = "ledger-secret"
CRM_TOKEN = "crm-token"
ITEMS = 120  # records per resource (rest-history reads them in two pages of 100)


def seed(example: str, n: int = ITEMS) -> dict[str, list[dict[str, Any]]]:
    """The records an example's server holds, by resource; ``n`` per resource.

    Raises:
        KeyError: unknown example.
    """
    return {
        "rest-delta-stream": lambda: {"changes": [{"id": f"t{i:04}", "amount": i * 10} for i in range(n)]},
        "rest-history": lambda: {"prices": [{"sku": f"sku-{i:04}", "price": 100 + i, "changed_at": 1000 + i}
                                            for i in range(n)]},
        "rest-parameterized": lambda: {"orders": [{"order_id": f"o{i:04}", "customer": f"c{i % 7}"} for i in range(n)]},
        "rest-since-rescans": lambda: {"customers": [
            {"id": f"c{i:04}", "name": f"customer {i}", "updated_at": f"2024-01-01T{i // 60:02}:{i % 60:02}:00Z"}
            for i in range(n)]},
        "rest-sporadic-empty": lambda: {"employees": [{"employee_no": f"e{i:04}", "name": f"employee {i}"}
                                                      for i in range(n)]},
        "rest-raw-reshape": lambda: {"articles": [{"id": i + 1, "title": f"Article Number {i + 1}"} for i in range(n)]},
    }[example]()


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _int(request: web.Request, name: str, default: int) -> int:
    return int(request.query.get(name, default))


def ledger_app(data: dict[str, list[dict[str, Any]]]) -> web.Application:
    """The delta stream: every record upserted, then every tenth one deleted."""
    api = FaultyApi()
    api.auth, api.client = "oauth", ("sluice", LEDGER_SECRET)
    for record in data["changes"]:
        api.upsert(record["id"], amount=record["amount"])
    for record in data["changes"][::10]:
        api.delete(record["id"])
    return api.app()


def prices_app(data: dict[str, list[dict[str, Any]]]) -> web.Application:
    async def prices(request: web.Request) -> web.Response:
        page, per = _int(request, "page", 1), _int(request, "per_page", 50)
        rows = data["prices"]
        return _json({"data": rows[(page - 1) * per : page * per], "total": len(rows)})

    app = web.Application()
    app.router.add_get("/prices", prices)
    return app


def shop_app(data: dict[str, list[dict[str, Any]]]) -> web.Application:
    orders = {o["order_id"]: o for o in data["orders"]}

    async def listing(request: web.Request) -> web.Response:
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 50)
        return _json({"items": data["orders"][offset : offset + limit]})

    async def lines(request: web.Request) -> web.Response:
        order = orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"error": "no such order"}, status=404)
        return _json({"lines": [{"sku": f"sku-{k}", "quantity": k} for k in range(1, 3)]})

    app = web.Application()
    app.router.add_get("/orders", listing)
    app.router.add_get("/orders/{order_id}/lines", lines)
    return app


def crm_app(data: dict[str, list[dict[str, Any]]]) -> web.Application:
    async def customers(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {CRM_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        after = request.query.get("updated_after", "")
        rows = sorted((c for c in data["customers"] if c["updated_at"] > after), key=lambda c: c["updated_at"])
        start, limit = int(request.query.get("cursor") or 0), _int(request, "limit", 50)
        more = start + limit < len(rows)
        cursor = str(start + limit) if more else None
        return _json({"data": rows[start : start + limit], "meta": {"next_cursor": cursor}})

    app = web.Application()
    app.router.add_get("/customers", customers)
    return app


APPS = {"rest-delta-stream": ledger_app, "rest-history": prices_app, "rest-parameterized": shop_app,
        "rest-since-rescans": crm_app}


def peer_command(example: str, port: int, workdir: Path) -> list[str]:
    """The command serving ``rest-sporadic-empty`` (json-server) or ``rest-raw-reshape``
    (Datasette) on ``port``, its data written into ``workdir``."""
    data = seed(example)
    if example == "rest-sporadic-empty":
        (workdir / "hr.json").write_bytes(orjson.dumps(data))
        return [str(JSON_SERVER), "--host", "127.0.0.1", "--port", str(port), "--quiet", str(workdir / "hr.json")]
    with sqlite3.connect(workdir / "db.sqlite") as db:
        db.execute("create table articles (id integer primary key, title text)")
        db.executemany("insert into articles values (:id, :title)", data["articles"])
    db.close()
    return [str(VENV_BIN / "datasette"), "serve", str(workdir / "db.sqlite"), "-h", "127.0.0.1", "-p", str(port)]


async def serve_app(app: web.Application, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until cancelled."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=[*APPS, "rest-sporadic-empty", "rest-raw-reshape"])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{args.example}: serving on http://127.0.0.1:{args.port} until Ctrl-C", flush=True)
    if args.example in APPS:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_app(APPS[args.example](seed(args.example)), args.port))
        return
    with tempfile.TemporaryDirectory() as workdir:
        peer = subprocess.Popen(peer_command(args.example, args.port, Path(workdir)), cwd=workdir)
        try:
            peer.wait()
        except KeyboardInterrupt:
            pass
        finally:
            peer.terminate()
            peer.wait(10)


if __name__ == "__main__":
    main()
