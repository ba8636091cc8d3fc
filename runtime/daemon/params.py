"""Request parameters of the service API: parsing with errors that name the parameter."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from runtime.daemon.app import http_error


def int_param(
    request: web.Request, name: str, default: int | None, *, low: int | None = None,
    high: int | None = None,
) -> int | None:
    """Query parameter ``name`` as an integer (``default`` when absent).

    Raises:
        HTTPBadRequest: not an integer, or outside ``low``..``high``.
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise http_error(400, f"{request.path}: query parameter {name}={raw!r} is not an integer") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise http_error(400, f"{request.path}: query parameter {name}={value} must be in {low}..{high}")
    return value


def bool_param(request: web.Request, name: str, default: bool) -> bool:
    """Query parameter ``name`` as a boolean (``true``/``false``/``1``/``0``).

    Raises:
        HTTPBadRequest: any other value.
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise http_error(400, f"{request.path}: query parameter {name}={raw!r} must be true or false")


async def params(request: web.Request) -> dict[str, Any]:
    """Operation parameters from the query string, then a form or JSON object body (body wins).

    Raises:
        HTTPBadRequest: the JSON body is not an object.
    """
    out: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return out
    if request.content_type == "application/json":
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise http_error(400, f"{request.path}: body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise http_error(400, f"{request.path}: body must be a JSON object of parameters")
        out.update(body)
    else:
        out.update(dict(await request.post()))
    return out
