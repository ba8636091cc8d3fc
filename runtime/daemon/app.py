"""The aiohttp application: routes, JSON errors, bearer-token authorization, access log.

Authorization (Sesam's service API uses JWT bearer tokens; Sluice uses static tokens from the
daemon settings): ``Authorization: Bearer TOKEN`` (or ``?token=TOKEN`` on GET, for the status
page's links). A ``read`` token may call GET endpoints; an ``admin`` token everything. Open without
a token: ``/api/health``; publishers whose sink sets ``anonymous_read``; ``/`` and ``/metrics`` when
the settings make them public. A receiver also accepts the token set on its own source.

Errors are JSON ``{"error": MESSAGE, "status": CODE, ...}``; the message names the pipe, dataset
or request. Sluice errors map to statuses by what the caller does next: ConfigError 400,
OperationRefusedError and PipeTrippedError 409, anything else 500.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from runtime.config.models import PipeSpec
from runtime.config.secrets import reveal
from runtime.errors import ConfigError, OperationRefusedError, PipeTrippedError, SluiceError

if TYPE_CHECKING:
    from runtime.daemon.server import Daemon

log = structlog.get_logger("sluice.daemon")
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")


def dumps(data: Any) -> bytes:
    """JSON bytes; secrets and other unknown objects become their ``str`` (``***``)."""
    return orjson.dumps(data, default=str)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json", headers=headers)


class _PayloadTooLarge(web.HTTPClientError):
    """413 taking a body like the others (aiohttp's ``HTTPRequestEntityTooLarge`` takes sizes)."""

    status_code = 413


def http_error(status: int, message: str, **fields: Any) -> web.HTTPException:
    """An aiohttp HTTP exception with a JSON body ``{"error": message, "status": status, ...}``."""
    cls: type[web.HTTPException] = web.HTTPException
    for candidate in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                      web.HTTPConflict, web.HTTPInternalServerError, web.HTTPMethodNotAllowed,
                      web.HTTPUnsupportedMediaType, _PayloadTooLarge):
        if candidate.status_code == status:
            cls = candidate
    exc = cls(body=dumps({"error": message, "status": status, **fields}), content_type="application/json")
    return exc


def daemon_of(request: web.Request) -> Daemon:
    return request.app[DAEMON]


def endpoint_pipe(request: web.Request, part: str, noun: str) -> PipeSpec:
    """The pipe named in the path whose ``part`` (``source`` or ``sink``) is an ``http_endpoint``
    (a receiver or a publisher, ``noun``); 404 otherwise."""
    pipe = request.match_info["pipe"]
    spec = daemon_of(request).runtime.config.pipes.get(pipe)
    if spec is None or getattr(spec, part).config.type != "http_endpoint":
        reason = "does not exist" if spec is None else f"has no http_endpoint {part}"
        raise http_error(404, f"no {noun} {pipe!r}: the pipe {reason}; a {noun} is a pipe with "
                              f"{part} {{type: http_endpoint}}", pipe=pipe)
    return spec


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate Sluice errors into JSON responses."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type != "application/json" and exc.status >= 400:
            raise http_error(exc.status, f"{exc.reason}: {request.method} {request.path}") from None
        raise
    except ConfigError as exc:
        raise http_error(400, str(exc), problems=[p.__dict__ for p in exc.problems]) from None
    except (OperationRefusedError, PipeTrippedError) as exc:
        raise http_error(409, str(exc), pipe=exc.pipe) from None
    except SluiceError as exc:
        raise http_error(500, str(exc), pipe=exc.pipe) from None
    except Exception as exc:
        log.exception("http.handler_failed", method=request.method, path=request.path)
        raise http_error(
            500, f"{request.method} {request.path} failed: {type(exc).__name__}; see the daemon log"
        ) from exc


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    if request.method in ("GET", "HEAD"):
        return request.query.get("token")
    return None


def _public(request: web.Request, daemon: Daemon) -> bool:
    path, settings = request.path, daemon.settings
    if path == "/api/health":
        return True
    if path == "/" and settings.public_status_page:
        return True
    if path == "/metrics" and settings.public_metrics:
        return True
    pipe = request.match_info.get("pipe")
    if path.startswith("/api/publishers/") and pipe and request.method in ("GET", "HEAD"):
        spec = daemon.runtime.config.pipes.get(pipe) if daemon.runtime.config else None
        return bool(spec is not None and getattr(spec.sink.config, "anonymous_read", False))
    return False


def _receiver_token(request: web.Request, daemon: Daemon, token: str) -> bool:
    pipe = request.match_info.get("pipe")
    if not request.path.startswith("/api/receivers/") or not pipe or daemon.runtime.config is None:
        return False
    spec = daemon.runtime.config.pipes.get(pipe)
    own = getattr(spec.source.config, "token", None) if spec else None
    return own is not None and hmac.compare_digest(reveal(own).encode(), token.encode())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token authorization (see the module docstring)."""
    daemon = daemon_of(request)
    if not daemon.settings.api_auth or _public(request, daemon):
        return await handler(request)
    token = _token(request)
    if not token:
        raise http_error(401, f"{request.method} {request.path} needs a bearer token "
                              "(Authorization: Bearer TOKEN); ask the operator for one")
    role = None
    for known, known_role in daemon.tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            role = known_role
    if role is None and _receiver_token(request, daemon, token):
        role = "admin"
    if role is None:
        raise http_error(401, f"{request.method} {request.path}: the bearer token is not valid")
    if request.method not in ("GET", "HEAD") and role != "admin":
        raise http_error(403, f"{request.method} {request.path} needs an admin token; "
                              "this token has the read role")
    return await handler(request)


class AccessLogger(AbstractAccessLogger):
    """One structured line per request; the query string (which may hold a token) is left out."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        structlog.get_logger("sluice.http").info(
            "http.request", method=request.method, path=request.path, status=response.status,
            seconds=round(time, 4),
        )


def build_app(daemon: Daemon) -> web.Application:
    """The application with every route of the daemon."""
    from runtime.daemon import api_cluster, api_data, api_pipes, api_units, publishers, receivers, scrape, status

    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=64 * 1024**2)
    app[DAEMON] = daemon
    app.router.add_get("/api/health", health)
    api_pipes.add_routes(app.router)
    api_units.add_routes(app.router)
    api_cluster.add_routes(app.router)
    api_data.add_routes(app.router)
    publishers.add_routes(app.router)
    receivers.add_routes(app.router)
    status.add_routes(app.router)
    scrape.add_routes(app.router)
    return app


async def health(request: web.Request) -> web.Response:
    """``GET /api/health``: ``{"status": "ok", "pipes": N}`` (no token needed)."""
    daemon = daemon_of(request)
    config = daemon.runtime.config
    return json_response({"status": "ok", "pipes": len(config.pipes) if config else 0})
