"""JSON push receivers (Sesam's ``http_endpoint`` source, json-push.rst).

``POST /api/receivers/{pipe}/entities`` takes a JSON array of entities (or one object) and puts
it through the pipe's transforms into its sink. With a dataset sink the batch and the pipe's
checkpoint are written in one store transaction before the response returns (durable).

Query parameters (Sesam's JSON push sink sends them): ``sequence_id``, ``is_full``, ``is_first``,
``is_last``, ``request_id``, ``previous_request_id``. A full sync (``is_full=true``) starts with
``is_first=true`` under a new ``sequence_id`` and ends with ``is_last=true``; ids not received in
between are then tombstoned (deletion tracking). 409 Conflict, after which the sender restarts the
sequence, when:

* a full-sync request arrives for a sequence that is not active and is not ``is_first``;
* ``is_first`` arrives in the middle of the active sequence;
* ``is_full`` changes within a sequence;
* ``previous_request_id`` is not the ``request_id`` of the last request accepted in the sequence.

A request with a new ``sequence_id`` replaces the active sequence. The active sequence is kept in
the pipe's info document under ``receiver``, with the changes it made so far and the circuit
breaker limit taken at its first request: a full sync is one run for the breaker, however many
requests it spans (an incremental push is one run by itself).

Refused before anything is written: a body that is not ``application/json`` (415), one larger than
the daemon setting ``receiver_max_body_bytes`` (413), one that is not a JSON object or array of
objects, or an entity without a non-empty string ``_id`` or with a ``_deleted`` that is not a
boolean (400, naming each entity by its index in the request).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
from aiohttp import web

from runtime import metrics
from runtime.config.models import PipeSpec
from runtime.daemon.app import daemon_of, endpoint_pipe, http_error, json_response
from runtime.daemon.build import build, opened, request_run
from runtime.daemon.params import bool_param
from runtime.store.protocol import Checkpoint, WriteResult


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/receivers/{pipe}/entities", receive)


def receiver_spec(request: web.Request) -> PipeSpec:
    """The pipe named in the path; 404 unless it has an ``http_endpoint`` source."""
    spec = endpoint_pipe(request, "source", "receiver")
    pipe = spec.id
    if spec.model.pump.mode == "off":
        raise http_error(409, f"receiver {pipe!r} has pump.mode 'off' and accepts nothing", pipe=pipe)
    return spec


async def _body(request: web.Request, pipe: str) -> bytes:
    """The request body: 415 unless ``Content-Type: application/json``; 413 above the daemon's
    ``receiver_max_body_bytes`` (told by Content-Length before reading, or found while reading)."""
    if request.content_type != "application/json":
        raise http_error(415, f"receiver {pipe!r}: Content-Type must be application/json, got "
                              f"{request.headers.get('Content-Type', 'none')!r}; nothing was written", pipe=pipe)
    limit = daemon_of(request).settings.receiver_max_body_bytes
    too_large = http_error(413, f"receiver {pipe!r}: the body is larger than {limit} bytes "
                                "(daemon setting receiver_max_body_bytes); send smaller requests, "
                                "nothing was written", pipe=pipe, max_bytes=limit)
    if (request.content_length or 0) > limit:
        raise too_large
    try:
        return await request.clone(client_max_size=limit).read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None


def entity_problems(items: list[dict[str, Any]]) -> list[str]:
    """Why entities of a pushed batch are refused, as ``"entity INDEX: REASON"`` (empty: none).

    An entity needs a non-empty string ``_id``; ``_deleted``, when present, is true or false
    (the entity model, DESIGN.md "Entities and datasets").
    """
    problems = []
    for i, e in enumerate(items):
        eid, deleted = e.get("_id"), e.get("_deleted", False)
        if not isinstance(eid, str) or not eid:
            got = "none" if "_id" not in e else orjson.dumps(eid, default=str).decode()[:60]
            problems.append(f"entity {i}: _id must be a non-empty string (got {got})")
        if not isinstance(deleted, bool):
            got = orjson.dumps(deleted, default=str).decode()[:60]
            problems.append(f"entity {i}: _deleted must be true or false (got {got})")
    return problems


async def _entities(request: web.Request, pipe: str) -> list[dict[str, Any]]:
    try:
        body = orjson.loads(await _body(request, pipe))
    except orjson.JSONDecodeError as exc:
        raise http_error(400, f"receiver {pipe!r}: body is not valid JSON: {exc}", pipe=pipe) from None
    items = [body] if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise http_error(400, f"receiver {pipe!r}: body must be a JSON array of entity objects", pipe=pipe)
    problems = entity_problems(items)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise http_error(400, f"receiver {pipe!r}: {shown}; nothing was written", pipe=pipe,
                         problems=problems[:100])
    return items


def plan_sequence(active: dict[str, Any] | None, q: dict[str, Any], pipe: str) -> dict[str, Any] | None:
    """The sequence state after accepting a request, or an HTTP 409/400 naming the rule broken.

    Args:
        active: the stored sequence (``sequence_id``, ``is_full``, ``last_request_id``, ``sweep``).
        q: the request's parsed parameters.

    Returns:
        The new sequence state (None: no sequence is tracked).
    """
    seq, full = q["sequence_id"], q["is_full"]
    same = active is not None and seq is not None and active["sequence_id"] == seq

    def conflict(why: str) -> web.HTTPException:
        return http_error(409, f"receiver {pipe!r}: {why}; restart the sync with a new sequence_id "
                               "and is_first=true", pipe=pipe, sequence_id=seq)

    if full and seq is None:
        raise http_error(400, f"receiver {pipe!r}: a full sync (is_full=true) needs a sequence_id", pipe=pipe)
    if same:
        assert active is not None
        if q["is_first"]:
            raise conflict(f"is_first=true in the middle of sequence {seq!r}")
        if bool(active["is_full"]) != full:
            raise conflict(f"is_full changed within sequence {seq!r}")
        prev = q["previous_request_id"]
        if prev is not None and prev != active.get("last_request_id"):
            raise conflict(f"previous_request_id {prev!r} is not the last request of sequence {seq!r} "
                           f"({active.get('last_request_id')!r})")
        return {**active, "last_request_id": q["request_id"]}
    if full:
        if not q["is_first"]:
            raise conflict(f"full-sync sequence {seq!r} is not active (it was never started, or a "
                           "newer sequence replaced it)")
        return {"sequence_id": seq, "is_full": True, "last_request_id": q["request_id"],
                "sweep": time.time_ns() // 1000}
    if seq is None:
        return active  # an incremental push outside any sequence leaves the active one alone
    return {"sequence_id": seq, "is_full": False, "last_request_id": q["request_id"], "sweep": None}


def _query(request: web.Request) -> dict[str, Any]:
    q = request.query
    return {
        "sequence_id": q.get("sequence_id") or None,
        "request_id": q.get("request_id") or None,
        "previous_request_id": q.get("previous_request_id") or None,
        "is_full": bool_param(request, "is_full", False),
        "is_first": bool_param(request, "is_first", False),
        "is_last": bool_param(request, "is_last", False),
    }


async def receive(request: web.Request) -> web.Response:
    """Accept one pushed batch (see the module docstring); returns what was written."""
    spec = receiver_spec(request)
    daemon = daemon_of(request)
    rt, pipe = daemon.runtime, spec.id
    q = _query(request)
    entities = await _entities(request, pipe)
    lock = daemon.receiver_locks.setdefault(pipe, anyio.Lock())
    async with lock:
        info = (await rt.store.pipe_state(pipe)).info
        active = info.get("receiver")
        after = plan_sequence(active, q, pipe)
        full = after if after and after.get("is_full") else None  # the full-sync sequence, if any
        sweep = full["sweep"] if full else None
        ending = bool(after and after.get("is_full") and q["is_last"])
        run = request_run("push", batch_size=max(len(entities), 1000), sweep=sweep)
        transforms = [build(rt, spec, t, run) for t in spec.transforms]
        sink = build(rt, spec, spec.sink, run)
        total = WriteResult()
        async with opened([*transforms, sink]):
            if full and not q["is_first"]:  # one circuit breaker limit per full sync, like one run
                sink.resume_breaker(full.get("changes", 0), full.get("limit"))
            out = entities
            for t in transforms:
                out = await t.transform(out) if out else out
            total = _add(total, await sink.write_batch(out, Checkpoint(None, sweep)))
            if ending:
                total = _add(total, await sink.finish(Checkpoint(None, None)))
            elif full:
                full["changes"], full["limit"] = sink.breaker()
        counters = dict(info.get("counters", {}))
        for key in ("new", "changed", "deleted", "unchanged"):
            counters[key] = counters.get(key, 0) + getattr(total, key)
        counters["read"] = counters.get("read", 0) + len(entities)
        await rt.store.update_pipe_info(pipe, {"receiver": None if ending else after, "counters": counters})
        if ending or (q["is_first"] and q["is_full"]):
            event = "receiver-full-sync-completed" if ending else "receiver-full-sync-started"
            await rt.store.log_event(pipe, run.run_id, event, {"sequence_id": q["sequence_id"]})
    metrics.RECEIVED.labels(pipe).inc(len(entities))
    metrics.READ.labels(pipe).inc(len(entities))
    metrics.WRITTEN.labels(pipe).inc(total.new + total.changed)
    metrics.DELETED.labels(pipe).inc(total.deleted)
    if total.changes and daemon.scheduler is not None:
        daemon.scheduler.signal(spec.writes)
    return json_response({
        "pipe": pipe, "received": len(entities), "new": total.new, "changed": total.changed,
        "deleted": total.deleted, "unchanged": total.unchanged, "sequence_id": q["sequence_id"],
        "full_sync": "completed" if ending else ("active" if sweep is not None else None),
    })


def _add(a: WriteResult, b: WriteResult) -> WriteResult:
    return WriteResult(a.new + b.new, a.changed + b.changed, a.deleted + b.deleted,
                       a.unchanged + b.unchanged, a.tripped or b.tripped)
