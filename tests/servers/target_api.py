"""Our own share *target* API (aiohttp) with fault injection, for the ``rest`` sink, the
side-effecting ``rest`` transform and the share patterns' tests, examples and benches.

Ground truth is :attr:`TargetApi.records` (id -> record) with an integer version per record (its
``ETag`` is ``"v<version>"``), and :attr:`TargetApi.log`, the write log: one entry per write the
API *applied* (``{"op": "create"|"update"|"delete", "id", "key", "if_match", "version"}``), in
order, also when its response was then lost.

==================================  ==============================================================
``POST /records``                   create; the API picks the id (``r1``, ``r2``, ...); 201 with
                                    the record, ``Location`` and ``ETag``
``GET /records/{id}``               the record and its ``ETag``, or 404
``GET /records?ref=R``              ``{"data": [...]}``: records whose ``ref`` (the external
                                    reference a client wrote) is ``R``; ``{"data": []}`` if none
``PUT|PATCH /records/{id}``         replace / merge; ``If-Match`` must name the current ``ETag``
                                    (412 otherwise); with :attr:`require_if_match` a write without
                                    it gets 428
``DELETE /records/{id}``            204, or 404; ``If-Match`` as for updates
``POST /records/batch``             a JSON list of records, all created or, if one is invalid,
                                    none: 422 ``{"errors": [{"index", "field", "message"}]}``
``GET /_log``                       the write log, ``GET /_records`` every record (for tests run
                                    in another process)
``POST /_control/touch/{id}``       change a record as another writer would (``touched`` + 1, new
                                    version); ``?after_read=1``: do so right after the record's
                                    next ``GET`` is answered (a write between a client's read and
                                    its write, :attr:`touch_after_read`)
==================================  ==============================================================

Validation (creates and updates): ``name`` must be a non-empty string and ``amount``, when
present, an integer, else 422 ``{"errors": [{"field", "message"}]}``.

``Idempotency-Key`` (IETF draft-ietf-httpapi-idempotency-key-header; Stripe's behaviour): with
:attr:`honour_idempotency` (the default) the first response for a key is saved and replayed for a
repeat with the same body; a repeat with another body gets 422 ``idempotency_key_reused``. With
``honour_idempotency = False`` the header is ignored (a repeated POST creates again).

Faults are :class:`~tests.servers.faults.FaultyServer`'s (``{"status": 503}``, ``{"reset":
True}``, ``{"lost": True}`` = applied, then the connection is dropped before the response, ...),
queued in :attr:`faults` or drawn by :meth:`chaos`; :attr:`in_flight` / :attr:`max_in_flight`
count requests being handled.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import orjson
from aiohttp import web

from tests.servers.faults import FaultyServer, run_forever


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def problems(record: Any) -> list[dict[str, str]]:
    """The validation errors of a record body (empty when valid)."""
    if not isinstance(record, dict):
        return [{"field": "", "message": "the body must be a JSON object"}]
    out = []
    name = record.get("name")
    if not isinstance(name, str) or not name:
        out.append({"field": "name", "message": "required, a non-empty string"})
    if "amount" in record and not isinstance(record["amount"], int):
        out.append({"field": "amount", "message": "must be an integer"})
    return out


class TargetApi(FaultyServer):
    """State and behaviour of the target API; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self.log: list[dict[str, Any]] = []
        self.honour_idempotency = True
        self.require_if_match = False
        self.replays = 0  # requests answered from the idempotency store
        self.touch_after_read: set[str] = set()  # ids touched once right after their next GET
        self._saved: dict[str, tuple[bytes, int, bytes, dict[str, str]]] = {}  # key -> body, status, response
        self._ids = itertools.count(1)

    # ---- state helpers (tests call them in-process) -------------------------------------------
    def etag(self, rid: str) -> str:
        return f'"v{self.versions[rid]}"'

    def creates(self) -> list[dict[str, Any]]:
        return [w for w in self.log if w["op"] == "create"]

    def touch(self, rid: str) -> dict[str, Any]:
        """Change a record as another writer would: ``touched`` + 1 and a new version."""
        record = self.records[rid]
        record["touched"] = record.get("touched", 0) + 1
        self.versions[rid] += 1
        self.log.append({"op": "touch", "id": rid, "key": None, "if_match": None, "version": self.versions[rid]})
        return record

    def _create(self, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        rid = f"r{next(self._ids)}"
        self.records[rid] = {**body, "id": rid}
        self.versions[rid] = 1
        self.log.append({"op": "create", "id": rid, "key": key, "if_match": None, "version": 1})
        return self.records[rid]

    # ---- routes -------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", lambda r: _json({"records": len(self.records)}))
        router.add_get("/_log", lambda r: _json(self.log))
        router.add_get("/_records", lambda r: _json(self.records))
        router.add_post("/_control/touch/{id}", self._touch)
        router.add_post("/records/batch", self._batch)
        router.add_post("/records", self._post)
        router.add_get("/records", self._find)
        router.add_get("/records/{id}", self._get)
        router.add_put("/records/{id}", self._update)
        router.add_patch("/records/{id}", self._update)
        router.add_delete("/records/{id}", self._delete)

    async def _touch(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        if rid not in self.records:
            return self.error(404, "not_found", f"no record {rid}")
        if request.query.get("after_read"):
            self.touch_after_read.add(rid)
            return _json({"after_read": rid}, 202)
        return _json(self.touch(rid), headers={"ETag": self.etag(rid)})

    async def _body(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(body=orjson.dumps({"error": "bad_json", "message": "body is not JSON"}),
                                     content_type="application/json") from None

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        key = request.headers.get("Idempotency-Key") if self.honour_idempotency else None
        if key is not None and key in self._saved:
            body, status, saved, headers = self._saved[key]
            if body != raw:
                return self.error(422, "idempotency_key_reused", "the key was used with another body")
            self.replays += 1
            return web.Response(body=saved, status=status, content_type="application/json", headers=headers)
        record = await self._body(request)
        errors = problems(record)
        if errors:
            response = _json({"error": "invalid", "errors": errors}, 422)
            headers: dict[str, str] = {}
        else:
            created = self._create(record, request.headers.get("Idempotency-Key"))
            headers = {"Location": f"/records/{created['id']}", "ETag": self.etag(created["id"])}
            response = _json(created, 201, headers)
        if key is not None:  # saved whether it succeeded or failed (Stripe)
            assert isinstance(response.body, bytes)
            self._saved[key] = (raw, response.status, response.body, headers)
        return response

    async def _batch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, list):
            return self.error(400, "bad_request", "the body must be a JSON list")
        errors = [{"index": i, **e} for i, r in enumerate(body) for e in problems(r)]
        if errors:
            return _json({"error": "invalid", "errors": errors}, 422)
        return _json([self._create(r, None) for r in body], 201)

    async def _find(self, request: web.Request) -> web.Response:
        ref = request.query.get("ref")
        found = [r for r in self.records.values() if ref is None or r.get("ref") == ref]
        return _json({"data": found})

    async def _get(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        if rid not in self.records:
            return self.error(404, "not_found", f"no record {rid}")
        response = _json(self.records[rid], headers={"ETag": self.etag(rid)})
        if rid in self.touch_after_read:  # the answer was read; another writer comes before the client's write
            self.touch_after_read.discard(rid)
            self.touch(rid)
        return response

    def _precondition(self, request: web.Request, rid: str) -> web.Response | None:
        match = request.headers.get("If-Match")
        if match is None:
            if self.require_if_match:
                return self.error(428, "precondition_required", "send If-Match with the record's ETag")
            return None
        if match != "*" and match != self.etag(rid):
            return self.error(412, "precondition_failed", f"If-Match {match} is not the current ETag {self.etag(rid)}")
        return None

    def _refusal(self, request: web.Request, rid: str) -> web.Response | None:
        """404 for an unknown record, else the If-Match refusal (412/428), else None."""
        if rid not in self.records:
            return self.error(404, "not_found", f"no record {rid}")
        return self._precondition(request, rid)

    async def _update(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        refused = self._refusal(request, rid)
        if refused is not None:
            return refused
        body = await self._body(request)
        merged = {**self.records[rid], **body} if request.method == "PATCH" and isinstance(body, dict) else body
        errors = problems(merged)
        if errors:
            return _json({"error": "invalid", "errors": errors}, 422)
        self.records[rid] = {**merged, "id": rid}
        self.versions[rid] += 1
        self.log.append({"op": "update", "id": rid, "key": request.headers.get("Idempotency-Key"),
                         "if_match": request.headers.get("If-Match"), "version": self.versions[rid]})
        return _json(self.records[rid], headers={"ETag": self.etag(rid)})

    async def _delete(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        refused = self._refusal(request, rid)
        if refused is not None:
            return refused
        del self.records[rid]
        self.log.append({"op": "delete", "id": rid, "key": None, "if_match": request.headers.get("If-Match"),
                         "version": self.versions.pop(rid)})
        return web.Response(status=204)


def main() -> None:
    """``python -m tests.servers.target_api --port N``: serve on 127.0.0.1:N (0: ephemeral) in its
    own process; prints the base URL, then serves until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument("--ignore-idempotency-key", action="store_true", help="do not honour Idempotency-Key")
    parser.add_argument("--lost", type=float, default=0.0, help="share of writes applied whose response is lost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=int, default=0,
                        help="records r1..rN created at start (name 'record i', amount i), as another writer made them")
    args = parser.parse_args()
    api = TargetApi()
    for i in range(1, args.records + 1):
        api._create({"name": f"record {i}", "amount": i}, None)
    api.latency = args.latency
    api.honour_idempotency = not args.ignore_idempotency_key
    if args.lost:
        api.chaos(args.lost, args.seed, ({"lost": True},))
    run_forever(api, args.port)


if __name__ == "__main__":
    main()
