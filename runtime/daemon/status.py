"""The status pages: server-rendered HTML (Jinja2 templates with autoescaping), no JavaScript.

====================================  ===========================================================
``GET /``                              the flow graph (:mod:`runtime.daemon.status_graph`), a table
                                       of pipes (state, last run, counts, work units by status,
                                       next run, error) and one of datasets; refreshes itself
                                       every 5 seconds
``GET /status/pipes/{pipe}/log``       the pipe's execution log, newest first: ``limit`` events a
                                       page (default 50, 1..1000), ``before`` = seq of the page's
                                       last event to see older ones
``GET /status/datasets/{dataset}``     the latest version of each entity in offset order: ``limit``
                                       a page (default 50, 1..1000), ``since`` = the offset the page
                                       starts after; each entity shown as indented JSON
====================================  ===========================================================

Authorization is the service API's (see :mod:`runtime.daemon.app`): ``/`` is open when the daemon
settings make the status page public, the log and dataset pages always need a read token, as the
JSON endpoints they replace do. When a page is opened with ``?token=``, its links carry the token
so they work from a browser. An unknown pipe or dataset is a 404 naming it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from runtime.daemon.api_data import dataset_view
from runtime.daemon.api_pipes import pipe_views, spec_of
from runtime.daemon.app import daemon_of, http_error
from runtime.daemon.params import int_param
from runtime.daemon.status_graph import STATE_COLOURS, flow_graph, render_svg, utc
from runtime.pump.schedule import iso

REFRESH_S = 5
PAGE = {"default": 50, "low": 1, "high": 1000}
TEMPLATES = Environment(loader=PackageLoader("runtime.daemon", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True)
TEMPLATES.globals.update(colours=STATE_COLOURS, utc=utc, q=lambda name: quote(name, safe=""))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", status_page)
    router.add_get("/status/pipes/{pipe}/log", pipe_log_page)
    router.add_get("/status/datasets/{dataset}", dataset_page)


def _render(request: web.Request, template: str, **context: Any) -> web.Response:
    token = request.query.get("token")

    def link(path: str, **query: Any) -> str:
        args = {k: v for k, v in query.items() if v is not None}
        if token:
            args["token"] = token
        return path + ("?" + urlencode(args) if args else "")

    html = TEMPLATES.get_template(template).render({"link": link, "path": request.path, "refresh_s": None, **context})
    return web.Response(text=html, content_type="text/html")


def _limit(request: web.Request) -> int:
    return int_param(request, "limit", None, low=PAGE["low"], high=PAGE["high"]) or PAGE["default"]


async def status_page(request: web.Request) -> web.Response:
    """``GET /``: graph and tables (auth: a read token, unless ``public_status_page``)."""
    daemon = daemon_of(request)
    rt = daemon.runtime
    specs = list(rt.config.pipes.values())
    pipes = await pipe_views(request, specs)
    infos = {i.name: i for i in await rt.store.datasets()}
    named = {ds for spec in specs for ds in (*spec.reads, *spec.writes)}
    token = request.query.get("token")
    graph = flow_graph(specs, {p["_id"]: p for p in pipes}, {**dict.fromkeys(named), **infos},
                       lambda path: path + ("?" + urlencode({"token": token}) if token else ""))
    return _render(request, "index.html", title="Sluice status", refresh_s=REFRESH_S, pipes=pipes,
                   datasets=[dataset_view(i) for i in infos.values()], svg=await render_svg(graph),
                   config_dir=str(rt.config_dir), started=iso(daemon.started_at) or "")


async def pipe_log_page(request: web.Request) -> web.Response:
    """``GET /status/pipes/{pipe}/log``: one page of the execution log, newest first (Sesam's
    execution dataset, shown as a table).

    Raises:
        HTTPNotFound: no such pipe in the running config.
        HTTPBadRequest: ``before`` or ``limit`` is not a positive integer in range.
    """
    spec = spec_of(request)
    limit = _limit(request)
    before = int_param(request, "before", None, low=1)
    events = await daemon_of(request).runtime.store.execution_log(
        spec.id, before=before, limit=limit + 1, newest_first=True)
    older = events[limit - 1].seq if len(events) > limit else None
    return _render(request, "log.html", title=f"Execution log of pipe {spec.id}", events=events[:limit],
                   limit=limit, before=before, older=older, details=_details)


def _details(data: dict[str, Any]) -> str:
    """An event's fields other than its error and run id (shown apart) as one line of JSON."""
    rest = {k: v for k, v in data.items() if k not in ("error", "run_id")}
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS, default=str).decode() if rest else ""


async def dataset_page(request: web.Request) -> web.Response:
    """``GET /status/datasets/{dataset}``: one page of the dataset's latest versions.

    Raises:
        HTTPNotFound: the store has no such dataset and no pipe of the running config names it.
        HTTPBadRequest: ``since`` or ``limit`` is not an integer in range.
    """
    name = request.match_info["dataset"]
    rt = daemon_of(request).runtime
    info = await rt.store.dataset_info(name)
    if info is None and not any(name in (*s.reads, *s.writes) for s in rt.config.pipes.values()):
        raise http_error(404, f"no dataset {name!r} in the store or the config; / lists them", dataset=name)
    limit = _limit(request)
    since = int_param(request, "since", None, low=0)
    entities, _ = await rt.store.read(name, since=since, limit=limit + 1)
    next_since = entities[limit - 1]["_updated"] if len(entities) > limit else None
    return _render(request, "dataset.html", title=f"Dataset {name}", entities=entities[:limit], limit=limit,
                   since=since, next_since=next_since, info=dataset_view(info) if info else None, body=_body)


def _body(entity: dict[str, Any]) -> str:
    """The entity without the keys shown in their own columns (``_id``, ``_updated``, ``_ts``), as
    indented JSON with sorted keys (Jinja escapes it into the page)."""
    rest = {k: v for k, v in entity.items() if k not in ("_id", "_updated", "_ts")}
    return orjson.dumps(rest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()
