"""``GET /metrics``: the Prometheus exposition, with since lag refreshed at each scrape."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from runtime.daemon import metrics
from runtime.daemon.app import daemon_of


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/metrics", scrape)


async def refresh_lag(request: web.Request) -> None:
    """Set ``sluice_pipe_since_lag`` for every pipe with a dataset source: committed offset of
    the input dataset minus the pipe's since (offsets not yet read)."""
    rt = daemon_of(request).runtime
    for spec in rt.config.pipes.values():
        if spec.source.config.type != "dataset":
            continue
        info = await rt.store.dataset_info(spec.source.config.dataset)
        if info is None:
            metrics.SINCE_LAG.labels(spec.id).set(0)
            continue
        since = (await rt.store.pipe_state(spec.id)).since
        done = since if isinstance(since, int) and not isinstance(since, bool) else -1
        metrics.SINCE_LAG.labels(spec.id).set(max(info.committed - done, 0))


async def scrape(request: web.Request) -> web.Response:
    await refresh_lag(request)
    body = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
