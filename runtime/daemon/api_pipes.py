"""Service API for pipes (Sesam's ``/pipes`` endpoints, swagger_public.yaml).

=========================================  ==================================================
``GET /api/pipes``                          every pipe with its state
``GET /api/pipes/{pipe}``                   one pipe with its state
``GET /api/pipes/{pipe}/pump``              the same (Sesam's pump state)
``POST /api/pipes/{pipe}/pump``             ``operation`` = ``start``, ``start-rescan``, ``stop``,
                                            ``enable``, ``disable`` (+ ``comment``),
                                            ``update-last-seen`` (+ ``last-seen``; empty resets),
                                            ``set-last-seen-to-end``, ``reset``
``GET /api/pipes/{pipe}/log``               execution log (``since`` = seq, ``limit``)
``GET /api/pipes/{pipe}/config``            the pipe's config (secrets shown as ``***``)
``GET|POST /api/pipes/{pipe}/units``        work units (:mod:`runtime.daemon.api_units`)
=========================================  ==================================================

A pipe whose source has work units shows ``units``: its units' counts by status (every status of
:data:`~runtime.store.protocol.UNIT_STATUSES`, zeros included); None for other pipes.

Operation parameters may come as a form, a JSON object body, or the query string.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from runtime.config.models import PipeSpec
from runtime.daemon.app import daemon_of, http_error, json_response
from runtime.daemon.params import int_param, params
from runtime.pipes import refuse_protected, strategy_of
from runtime.pump import has_pump
from runtime.pump.schedule import interval_of, iso
from runtime.store import PipeState, StateStore
from runtime.store.protocol import UNIT_STATUSES


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/pipes", list_pipes)
    router.add_get("/api/pipes/{pipe}", get_pipe)
    router.add_get("/api/pipes/{pipe}/pump", get_pipe)
    router.add_post("/api/pipes/{pipe}/pump", pump_operation)
    router.add_get("/api/pipes/{pipe}/log", execution_log)
    router.add_get("/api/pipes/{pipe}/config", pipe_config)


def spec_of(request: web.Request) -> PipeSpec:
    """The pipe named in the path; 404 naming it when the running config has none."""
    pipe = request.match_info["pipe"]
    daemon = daemon_of(request)
    spec = daemon.runtime.config.pipes.get(pipe)
    if spec is None:
        raise http_error(404, f"no pipe {pipe!r} in the running config ({daemon.runtime.config_dir}); "
                              "GET /api/pipes lists them", pipe=pipe)
    return spec


def pipe_kind(spec: PipeSpec) -> str:
    """``receiver``, ``publisher`` or ``pipe``."""
    if spec.source.config.type == "http_endpoint":
        return "receiver"
    if spec.sink.config.type == "http_endpoint":
        return "publisher"
    return "pipe"


async def pipe_views(request: web.Request, specs: list[PipeSpec]) -> list[dict[str, Any]]:
    """States of several pipes, from one read of all pipe states and dataset infos."""
    store = daemon_of(request).runtime.store
    states = {s.pipe: s for s in await store.pipe_states()}
    trips = {i.name for i in await store.datasets() if i.trip is not None}
    return [_view(request, spec, states.get(spec.id) or PipeState(spec.id), trips, await unit_counts(store, spec))
            for spec in specs]


async def unit_counts(store: StateStore, spec: PipeSpec) -> dict[str, int] | None:
    """The pipe's work units by status (every status, zeros included), None when its source has
    no work units."""
    if strategy_of(spec.source) != "units":
        return None
    counts = await store.unit_counts(spec.id)
    return {status: counts.get(status, 0) for status in UNIT_STATUSES}


async def pipe_view(request: web.Request, spec: PipeSpec) -> dict[str, Any]:
    """One pipe's JSON state: config summary, pump, stored state, live run."""
    store = daemon_of(request).runtime.store
    trips = set()
    for ds in spec.writes:
        info = await store.dataset_info(ds)
        if info is not None and info.trip is not None:
            trips.add(ds)
    return _view(request, spec, await store.pipe_state(spec.id), trips, await unit_counts(store, spec))


def _view(request: web.Request, spec: PipeSpec, state: PipeState, trips: set[str],
          units: dict[str, int] | None) -> dict[str, Any]:
    daemon = daemon_of(request)
    rt = daemon.runtime
    pump = daemon.scheduler.pumps.get(spec.id) if daemon.scheduler else None
    tripped = [ds for ds in spec.writes if ds in trips]
    run = rt.running.get(spec.id)
    cfg = spec.model.pump
    disabled = pump.disabled if pump else bool(state.info.get("disabled"))
    last = state.info.get("last_run")
    if cfg.mode == "off":
        word = "off"
    elif run is not None:
        word = "running"
    elif tripped:
        word = "tripped"
    elif disabled:
        word = "disabled"
    elif last is None:
        word = "never-run"
    else:
        word = {"failed": "failed", "interrupted": "interrupted"}.get(last.get("status"), "ok")
    return {
        "_id": spec.id,
        "kind": pipe_kind(spec),
        "name": spec.model.name,
        "source": spec.source.config.type,
        "sink": spec.sink.config.type,
        "reads": spec.reads,
        "writes": spec.writes,
        "state": word,
        "running": run is not None,
        "tripped": bool(tripped),
        "tripped_datasets": tripped,
        "since": state.since,
        "full_run_in_progress": state.sweep is not None,
        "last_run": last,
        "runs": state.info.get("runs", 0),
        "counters": state.info.get("counters", {}),
        "units": units,
        "pump": {
            "mode": cfg.mode,
            "has_pump": has_pump(spec),
            "enabled": not disabled,
            "disabled_comment": state.info.get("disabled_comment"),
            "schedule_interval": None if cfg.cron_expression else interval_of(spec),
            "cron_expression": cfg.cron_expression,
            "next_run": iso(pump.next_at) if pump and pump.scheduled else None,
            "consecutive_failures": pump.failures if pump else 0,
            "last_error": pump.last_error if pump else None,
        },
        "live": run.result.summary() if run is not None else None,
        "mailboxes": [m.__dict__ for m in run.mailbox_statistics()] if run is not None else [],
    }


async def list_pipes(request: web.Request) -> web.Response:
    config = daemon_of(request).runtime.config
    return json_response(await pipe_views(request, list(config.pipes.values())))


async def get_pipe(request: web.Request) -> web.Response:
    return json_response(await pipe_view(request, spec_of(request)))


def _last_seen(raw: Any) -> Any:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


async def pump_operation(request: web.Request) -> web.Response:
    """``POST /api/pipes/{pipe}/pump`` with ``operation`` (see the module docstring)."""
    spec = spec_of(request)
    daemon = daemon_of(request)
    rt, pipe = daemon.runtime, spec.id
    args = await params(request)
    op = args.get("operation")
    if daemon.scheduler is None:  # the HTTP server listens a moment before the scheduler exists
        raise http_error(503, "the daemon's scheduler is starting; try again in a moment", pipe=pipe)
    pump = daemon.scheduler.pump(pipe)
    result: dict[str, Any] = {"pipe": pipe, "operation": op}
    if op in ("start", "start-rescan"):
        if op == "start-rescan":
            refuse_protected(spec, "a rescan")  # 409, like a reset
        pump.start(full=op == "start-rescan")
    elif op == "stop":
        result["stopping"] = pump.stop_run()
    elif op in ("enable", "disable"):
        comment = args.get("comment")
        pump.disabled = op == "disable"
        await rt.store.update_pipe_info(pipe, {"disabled": pump.disabled, "disabled_comment": comment})
        await rt.store.log_event(pipe, "-", f"pump-{op}d", {"comment": comment})
        pump.reschedule()
    elif op == "update-last-seen":
        value = _last_seen(args.get("last-seen", args.get("last_seen")))
        await rt.reset_pipe(pipe, value)
        result["since"] = value
    elif op == "set-last-seen-to-end":
        if spec.source.config.type != "dataset":
            raise http_error(400, f"pipe {pipe!r}: set-last-seen-to-end needs a dataset source", pipe=pipe)
        info = await rt.store.dataset_info(spec.source.config.dataset)
        value = info.committed if info is not None and info.committed >= 0 else None
        await rt.reset_pipe(pipe, value)
        result["since"] = value
    elif op == "reset":
        await rt.reset_pipe(pipe, None)
        result["since"] = None
    else:
        raise http_error(400, f"pipe {pipe!r}: unknown pump operation {op!r}; use start, start-rescan, "
                              "stop, enable, disable, update-last-seen, set-last-seen-to-end or reset",
                         pipe=pipe)
    result["pipe_state"] = await pipe_view(request, spec)
    return json_response(result)


async def execution_log(request: web.Request) -> web.Response:
    """``GET /api/pipes/{pipe}/log?since=SEQ&limit=N``: events oldest first."""
    spec = spec_of(request)
    rt = daemon_of(request).runtime
    since = int_param(request, "since", None)
    limit = int_param(request, "limit", 100, low=1, high=10000)
    events = await rt.store.execution_log(spec.id, since=since, limit=limit)
    return json_response([
        {**e.data, "seq": e.seq, "run_id": e.run_id, "ts": iso(e.ts_us / 1e6), "event": e.event}
        for e in events
    ])


async def pipe_config(request: web.Request) -> web.Response:
    spec = spec_of(request)
    return json_response(spec.model.model_dump(by_alias=True, exclude_none=True))
