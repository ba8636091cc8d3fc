"""JSON pull publishers (Sesam's ``http_endpoint`` sink, json-pull.rst).

``GET /api/publishers/{pipe}/entities?since=&limit=`` streams a JSON array of the pipe's source
entities, put through its transforms when requested. ``since`` is exclusive and compared with
``_updated`` (for a dataset source: the offset); a client pages by sending the ``_updated`` of the
last entity it received. Deletions arrive as entities with ``_deleted: true``.

Response headers (dataset sources): ``X-Dataset-Populated`` (``true``/``false``) and
``X-Dataset-Max-Updated`` (the highest committed offset, JSON; ``null`` when empty). A pipe whose
sink sets ``anonymous_read: true`` is served without a token.

A pipe without transforms whose source can hand out its entities as JSON bytes (``read_json``:
the dataset source, from the stored versions) is served without decoding and re-encoding them.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from runtime import metrics
from runtime.config.models import PipeSpec
from runtime.daemon.app import daemon_of, endpoint_pipe
from runtime.daemon.build import build, opened, request_run
from runtime.daemon.params import int_param

CHUNK = 1000


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/publishers/{pipe}/entities", publish)


def publisher_spec(request: web.Request) -> PipeSpec:
    """The pipe named in the path; 404 unless it exists and has an ``http_endpoint`` sink."""
    return endpoint_pipe(request, "sink", "publisher")


def parse_since(raw: str | None) -> Any:
    """The ``since`` query value: JSON when it parses (offsets are integers), else the string."""
    if raw is None or raw == "":
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


async def _headers(request: web.Request, spec: PipeSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if spec.source.config.type == "dataset":
        info = await daemon_of(request).read_store.dataset_info(spec.source.config.dataset)
        populated = info is not None and info.populated
        top = info.committed if info is not None and info.committed >= 0 else None
        headers["X-Dataset-Populated"] = "true" if populated else "false"
        headers["X-Dataset-Max-Updated"] = orjson.dumps(top).decode()
    return headers


async def publish(request: web.Request) -> web.StreamResponse:
    """Stream the publisher's entities after ``since``, at most ``limit`` (all when absent)."""
    spec = publisher_spec(request)
    rt = daemon_of(request).runtime
    since = parse_since(request.query.get("since"))
    limit = int_param(request, "limit", None, low=1)
    batch = min(limit or CHUNK, CHUNK, spec.model.batch_size)
    run = request_run("publish", batch_size=batch)
    source = build(rt, spec, spec.source, run, store=daemon_of(request).read_store)
    transforms = [build(rt, spec, t, run) for t in spec.transforms]
    supports_since = spec.source.cls.continuation(spec.source.config)[0]
    headers = await _headers(request, spec)
    response: web.StreamResponse | None = None
    sent = 0
    gate = daemon_of(request).publish_gate
    raw = not transforms and hasattr(source, "read_json")  # stored JSON, sent as it is
    async with opened([source, *transforms]):
        chunks = (source.read_json if raw else source.read)(since if supports_since else None).__aiter__()
        try:
            while limit is None or sent < limit:
                async with gate:  # bounds loop time spent on streams: the API stays responsive
                    chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    for t in transforms:
                        chunk = await t.transform(chunk) if chunk else chunk
                    if limit is not None:
                        chunk = chunk[: limit - sent]
                    body = b",".join(chunk if raw else [orjson.dumps(e) for e in chunk])
                if response is None:  # headers go out only once the first chunk is known good
                    response = web.StreamResponse(headers=headers)
                    await response.prepare(request)
                    await response.write(b"[")
                if chunk:
                    await response.write((b"," if sent else b"") + body)
                    sent += len(chunk)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
    if response is None:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(b"[")
    await response.write(b"]")
    await response.write_eof()
    metrics.PUBLISHED.labels(spec.id).inc(sent)
    return response
