"""Service API for a pipe's work units (DIL's work units, as the ledger holds them).

=========================================  ==================================================
``GET /api/pipes/{pipe}/units``             the pipe's units by key (``status`` = one status)
``POST /api/pipes/{pipe}/units``            ``operation`` = ``retry`` (+ ``keys``: a list; none:
                                            every dead or failed unit): back to ``pending``
=========================================  ==================================================

A pipe whose source has no ``work_units`` is a 404 naming it; an unknown ``status`` or key a 400
or 404 naming it; a retry while a run holds the pipe's lock a 409 naming the run.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.config.models import PipeSpec
from runtime.daemon.api_pipes import spec_of, unit_counts
from runtime.daemon.app import daemon_of, http_error, json_response
from runtime.daemon.params import params
from runtime.pipes import strategy_of
from runtime.pump.schedule import iso
from runtime.store import WorkUnit
from runtime.store.protocol import UNIT_STATUSES


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/pipes/{pipe}/units", list_units)
    router.add_post("/api/pipes/{pipe}/units", units_operation)


def units_spec(request: web.Request) -> PipeSpec:
    """The pipe named in the path; 404 when it is unknown or its source has no work units."""
    spec = spec_of(request)
    if strategy_of(spec.source) != "units":
        raise http_error(404, f"pipe {spec.id!r} has no work units: its source "
                              f"({spec.source.config.type}) sets no work_units", pipe=spec.id)
    return spec


def unit_view(unit: WorkUnit) -> dict[str, Any]:
    """One ledger row as JSON: times as ISO 8601 UTC (``due``: when a failed or waiting unit runs
    again; ``lease_expiry``: while running) and as microseconds since the epoch (``*_us``)."""
    return {
        "key": unit.key, "status": "retired" if unit.retired else unit.status, "attempts": unit.attempts,
        "watermark": unit.watermark, "checkpoint": unit.checkpoint, "last_error": unit.last_error,
        "due": iso(unit.due_us / 1e6) if unit.due_us is not None else None, "due_us": unit.due_us,
        "variables": unit.variables, "lease_owner": unit.lease_owner,
        "lease_expiry": iso(unit.lease_expiry_us / 1e6) if unit.lease_expiry_us is not None else None,
        "swept": unit.swept, "closed": unit.closed,
    }


async def list_units(request: web.Request) -> web.Response:
    """``GET /api/pipes/{pipe}/units[?status=S]``: a JSON list of :func:`unit_view` by key (the
    retired ones only with ``status=retired``).

    Raises:
        HTTPNotFound: see :func:`units_spec`.
        HTTPBadRequest: ``status`` is not a unit status.
    """
    spec = units_spec(request)
    status = request.query.get("status") or None
    if status is not None and status not in UNIT_STATUSES:
        raise http_error(400, f"{request.path}: query parameter status={status!r} must be one of "
                              f"{', '.join(UNIT_STATUSES)}", pipe=spec.id)
    units = await daemon_of(request).runtime.store.work_units(spec.id, status=status)
    return json_response([unit_view(u) for u in units])


async def units_operation(request: web.Request) -> web.Response:
    """``POST /api/pipes/{pipe}/units`` with ``{"operation": "retry", "keys": [KEY, ...]}``
    (``keys`` absent or null: every dead or failed unit). Returns ``pipe``, ``operation``,
    ``retried`` (how many went back to pending) and ``units`` (counts by status after it).

    Raises:
        HTTPNotFound: see :func:`units_spec`; or a key names no unit of the pipe.
        HTTPBadRequest: an unknown operation, or ``keys`` is not a list of strings.
        HTTPConflict: a run holds the pipe's lock (named), or the pipe has no units yet.
    """
    spec = units_spec(request)
    rt = daemon_of(request).runtime
    store = rt.store
    args = await params(request)
    if args.get("operation") != "retry":
        raise http_error(400, f"pipe {spec.id!r}: unknown units operation {args.get('operation')!r}; "
                              "use retry", pipe=spec.id)
    keys = args.get("keys")
    if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
        raise http_error(400, f"pipe {spec.id!r}: keys must be a JSON list of unit keys, got {keys!r}",
                         pipe=spec.id)
    if keys:
        known = {u.key for u in await store.work_units(spec.id)}
        if unknown := [k for k in keys if k not in known]:
            raise http_error(404, f"pipe {spec.id!r} has no work unit {', '.join(map(repr, unknown))}; "
                                  f"GET /api/pipes/{spec.id}/units lists them", pipe=spec.id, keys=unknown)
    retried = await rt.retry_units(spec.id, keys or None)  # under the pipe's lock
    return json_response({"pipe": spec.id, "operation": "retry", "retried": retried,
                          "units": await unit_counts(store, spec)})
