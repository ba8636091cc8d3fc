"""``GET /metrics``: the Prometheus exposition of :mod:`runtime.metrics` (what the runtime and
connectors record), with the gauges read from the store refreshed at each scrape: since lag, and
work units by status."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from runtime import metrics
from runtime.daemon.app import daemon_of
from runtime.pipes import strategy_of


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


async def refresh_units(request: web.Request) -> None:
    """Set ``sluice_work_units{pipe,status}`` for every pipe whose source has work units, from
    the ledger's counts (one query per such pipe)."""
    rt = daemon_of(request).runtime
    for spec in rt.config.pipes.values():
        if strategy_of(spec.source) == "units":
            metrics.set_unit_counts(spec.id, await rt.store.unit_counts(spec.id))


class _WithoutCreated(CollectorRegistry):
    """:data:`runtime.metrics.REGISTRY` without the ``*_created`` samples (they double the
    exposition for no use here). Filtered at exposition: ``prometheus_client.disable_created_metrics()``
    would change them process-wide, in the metrics of a program that embeds Sluice too."""

    def collect(self) -> Iterator[Metric]:
        for family in metrics.REGISTRY.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


_EXPOSED = _WithoutCreated(auto_describe=False)


def exposition() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(_EXPOSED)


async def scrape(request: web.Request) -> web.Response:
    await refresh_lag(request)
    await refresh_units(request)
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
