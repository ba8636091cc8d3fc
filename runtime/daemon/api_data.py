"""Service API for datasets, circuit breakers and the config (Sesam's ``/datasets``, ``/config``).

=================================================  ==========================================
``GET /api/datasets``                               every dataset with offsets, sizes, breaker
``GET /api/datasets/{dataset}``                     one dataset
``POST /api/datasets/{dataset}``                    ``operation`` = ``commit-circuit-breaker`` or
                                                    ``rollback-circuit-breaker``
``GET /api/datasets/{dataset}/entities``            ``since`` (offset, exclusive), ``limit``,
                                                    ``history`` (every version), ``deleted``
                                                    (false leaves deleted entities out)
``GET /api/datasets/{dataset}/entity``              ``entity_id``, ``history``: one entity
``GET /api/config``                                 pipes and systems of the running config
``POST /api/config/validate``                       validate a JSON array of config objects (body)
                                                    or, with no body, the config directory
``POST /api/config/reload``                         reload the config directory (invalid: 400,
                                                    the running config is kept)
=================================================  ==========================================
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from runtime.config import load_config
from runtime.daemon.app import daemon_of, http_error, json_response
from runtime.daemon.params import bool_param, int_param, params
from runtime.errors import ConfigError
from runtime.pump.schedule import iso
from runtime.store import DatasetInfo


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/datasets", list_datasets)
    router.add_get("/api/datasets/{dataset}", get_dataset)
    router.add_post("/api/datasets/{dataset}", dataset_operation)
    router.add_get("/api/datasets/{dataset}/entities", dataset_entities)
    router.add_get("/api/datasets/{dataset}/entity", dataset_entity)
    router.add_get("/api/config", get_config)
    router.add_post("/api/config/validate", validate_config)
    router.add_post("/api/config/reload", reload_config)


def dataset_view(info: DatasetInfo) -> dict[str, Any]:
    trip = info.trip
    return {
        "_id": info.name,
        "committed": info.committed,
        "populated": info.populated,
        "ids": info.ids,
        "deleted": info.deleted,
        "tripped": trip is not None,
        "circuit_breaker": None if trip is None else {
            "pipe": trip.pipe, "limit": trip.limit, "held": info.held,
            "tripped_at": iso(trip.at_us / 1e6),
        },
        "compaction_held_by": [{"pipe": pipe, "read_to": off} for pipe, off in info.compaction_held_by],
    }


async def _info(request: web.Request) -> DatasetInfo:
    name = request.match_info["dataset"]
    info = await daemon_of(request).runtime.store.dataset_info(name)
    if info is None:
        raise http_error(404, f"no dataset {name!r} in the store; GET /api/datasets lists them", dataset=name)
    return info


async def list_datasets(request: web.Request) -> web.Response:
    infos = await daemon_of(request).runtime.store.datasets()
    return json_response([dataset_view(i) for i in infos])


async def get_dataset(request: web.Request) -> web.Response:
    return json_response(dataset_view(await _info(request)))


async def dataset_operation(request: web.Request) -> web.Response:
    """Commit or roll back a tripped circuit breaker (logged on the tripping pipe)."""
    info = await _info(request)
    daemon = daemon_of(request)
    op = (await params(request)).get("operation")
    if op == "commit-circuit-breaker":
        n = await daemon.runtime.commit_breaker(info.name)
    elif op == "rollback-circuit-breaker":
        n = await daemon.runtime.rollback_breaker(info.name)
    else:
        raise http_error(400, f"dataset {info.name!r}: unknown operation {op!r}; use "
                              "commit-circuit-breaker or rollback-circuit-breaker", dataset=info.name)
    if daemon.scheduler is not None:
        for pump in daemon.scheduler.pumps.values():
            if info.name in pump.spec.writes:
                pump.reschedule()
    after = await daemon.runtime.store.dataset_info(info.name)
    return json_response({"dataset": info.name, "operation": op, "versions": n,
                          "dataset_state": dataset_view(after) if after else None})


async def dataset_entities(request: web.Request) -> web.Response:
    """Committed entities after ``since``; the last one's ``_updated`` is the next ``since``."""
    info = await _info(request)
    since = int_param(request, "since", None)
    limit = int_param(request, "limit", 100, low=1, high=100_000)
    history = bool_param(request, "history", False)
    deleted = bool_param(request, "deleted", True)
    entities, _ = await daemon_of(request).runtime.store.read(
        info.name, since=since, limit=limit, history=history)
    if not deleted:
        entities = [e for e in entities if e.get("_deleted") is not True]
    return json_response(entities)


async def dataset_entity(request: web.Request) -> web.Response:
    info = await _info(request)
    entity_id = request.query.get("entity_id")
    if not entity_id:
        raise http_error(400, f"dataset {info.name!r}: query parameter entity_id is required")
    history = bool_param(request, "history", False)
    found = await daemon_of(request).runtime.store.get(info.name, entity_id, history=history)
    if not found:
        raise http_error(404, f"dataset {info.name!r} has no entity {entity_id!r}",
                         dataset=info.name, entity_id=entity_id)
    return json_response(found if history else found[-1])


async def get_config(request: web.Request) -> web.Response:
    rt = daemon_of(request).runtime
    config = rt.config
    return json_response({
        "dir": str(rt.config_dir),
        "pipes": [p.model.model_dump(by_alias=True, exclude_none=True) for p in config.pipes.values()],
        "systems": [{"_id": s.id, **s.config.model_dump(mode="json", exclude_none=True)}
                    for s in config.systems.values()],
    })


async def validate_config(request: web.Request) -> web.Response:
    """Validate posted config objects (or the config directory): ``{"valid": bool, ...}``."""
    rt = daemon_of(request).runtime
    body = await request.read() if request.can_read_body else b""
    try:
        if body.strip():
            try:
                objects = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise http_error(400, f"POST /api/config/validate: body is not valid JSON: {exc}") from None
            with tempfile.TemporaryDirectory(prefix="sluice-validate-") as tmp:
                (Path(tmp) / "posted.json").write_bytes(orjson.dumps(objects))
                config = load_config(tmp, rt.registry, rt.secrets)
        else:
            config = load_config(rt.config_dir, rt.registry, rt.secrets)
    except ConfigError as exc:
        return json_response({"valid": False, "problems": [p.__dict__ for p in exc.problems]})
    return json_response({"valid": True, "pipes": list(config.pipes), "systems": list(config.systems)})


async def reload_config(request: web.Request) -> web.Response:
    """Reload the config directory; an invalid one is refused with every problem (400)."""
    daemon = daemon_of(request)
    try:
        return json_response(await daemon.reload())
    except ConfigError as exc:
        raise http_error(
            400, f"config directory {daemon.runtime.config_dir} is invalid; the running config is kept. "
                 f"{exc}", problems=[p.__dict__ for p in exc.problems]) from None
