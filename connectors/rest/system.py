"""The ``system:rest`` system: one aiohttp session, auth, limits and retries for every pipe using it.

Sesam's REST system (sesam.md §3 "REST source, REST system and operations"): a base URL, headers,
TLS verification, timeouts, authentication and named operations. Added here (peers.md §5 idea 6):
a concurrency limit and a rate limit shared by every pipe of the system, and a retry policy per
status code (see :mod:`connectors.rest.retry`). :meth:`RestSystem.send` is the only place that
talks HTTP; aiohttp's exceptions are translated there.

Every request is recorded in the process metrics (:mod:`runtime.metrics`):
``observe_request(system, status or "error", seconds)`` per attempt (seconds: from sending to the
whole body read, not counting the wait for a concurrency or rate-limit slot), and
``count_retry(system, reason)`` per retry, reason being the status (``"429"``, ``"503"``, and
``"401"`` for a re-authorized request) or ``"connection"``, ``"timeout"``, ``"truncated"`` (a body
cut off by the connection) or ``"unparseable"`` (a 2xx body that did not parse, e.g. truncated JSON
with a consistent length, an HTML page served with 200).

A 401 with credentials that can be renewed (OAuth2) is repeated at once with a new token; a 401
right after a renewal renews again, within the attempts of the request (:meth:`RetryPolicy.reauthorize`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import anyio
import orjson
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from connectors.rest.auth import Auth, make_auth
from connectors.rest.body import parse_body
from connectors.rest.models import OperationConfig, RestSystemConfig
from connectors.rest.retry import NON_IDEMPOTENT, RateLimiter, RetryPolicy
from runtime.components import ComponentConfig, System
from runtime.config.secrets import reveal
from runtime.errors import BadDataError, ConfigError, ConfigProblem, FatalError, TransientError
from runtime.metrics import count_retry, observe_request

log = structlog.get_logger("sluice.rest")

_SECRET_NAMES = re.compile(r"token|key|secret|passw|signature|sig$|auth|code", re.IGNORECASE)


@dataclass
class Call:
    """One HTTP request, before auth.

    Attributes:
        method: HTTP method.
        url: absolute URL (may hold a query string).
        params: query parameters added to the URL's own.
        headers: request headers (the system's are added under them).
        payload: body value: JSON value (``json``), dict (``form``) or string (``text``).
        payload_type: ``json``, ``form`` or ``text``.
        idempotent: whether repeating the request is harmless (None: by method, POST and PATCH
            are not); decides which failures are retried (:mod:`connectors.rest.retry`).
    """

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None
    payload_type: str = "json"
    idempotent: bool | None = None


@dataclass
class Response:
    """A complete response: the whole body is read before it is returned.

    ``location`` (the request as named in errors, redacted) is computed only when asked for.
    ``attempts``: attempts made for this request, this one included.
    """

    status: int
    headers: CIMultiDict[str] | CIMultiDictProxy[str]
    body: bytes
    url: str
    request: Call
    system: RestSystem
    attempts: int = 1
    data: Any = None  # the parsed body, when ``send`` was given ``parse`` and the status is 2xx

    @property
    def location(self) -> str:
        return self.system.location(self.request)


def _maybe_sent(exc: BaseException) -> bool:
    """False only when aiohttp failed to open the connection (connect error or connect timeout):
    then no byte of the request left. Any other failure (reset, read timeout, a pooled connection
    closed by the server) may come after the server received the request."""
    return not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _error_reason(exc: BaseException) -> str:
    """The ``count_retry`` reason of a failed attempt: truncated, timeout or connection."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "connection"


class RestSystem(System):
    """A REST API: session, auth, shared concurrency and rate limits, retries.

    Args:
        config: the validated ``system:rest`` config.
        system_id: the system ``_id``.
    """

    Config: ClassVar[type[ComponentConfig]] = RestSystemConfig  # type: ignore[assignment]
    config: RestSystemConfig

    def __init__(self, config: RestSystemConfig, system_id: str) -> None:
        super().__init__(config, system_id)
        self.session: aiohttp.ClientSession | None = None
        self.policy = RetryPolicy(config.retry_strategy, retry_non_idempotent=config.retry_non_idempotent)
        self.limiter = RateLimiter(config.rate_limit)
        self.auth: Auth = make_auth(config.auth, self._fetch_token)
        self.authenticates = config.auth is not None
        self.requests = 0

    async def open(self) -> None:
        c = self.config
        # asyncio's semaphore (aiohttp ties the system to asyncio anyway): taking a free slot does
        # not yield to the event loop, anyio's does twice (a measurable cost per request)
        self.semaphore = asyncio.Semaphore(c.concurrency)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=c.concurrency, ssl=c.verify_ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=c.connect_timeout, sock_read=c.read_timeout),
            headers={k: reveal(v) for k, v in c.headers.items()},
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def operation(self, name: str, pipe: str) -> OperationConfig:
        """The named operation.

        Raises:
            ConfigError: the system has no such operation.
        """
        op = self.config.operations.get(name)
        if op is None:
            known = ", ".join(sorted(self.config.operations)) or "none"
            raise ConfigError([ConfigProblem(
                "<config>", pipe, "operation",
                f"system {self.id!r} has no operation {name!r}; known: {known}")])
        return op

    def absolute(self, url: str) -> str:
        """``url`` resolved against ``base_url`` (kept when it has a scheme)."""
        if url.startswith(("http://", "https://")) or (":" in url and urlsplit(url).scheme):
            return url
        base = self.config.base_url
        return base.rstrip("/") + "/" + url.lstrip("/") if url else base

    def redact(self, url: str) -> str:
        """``url`` without user info and with secret-looking query values as ``***``."""
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        secret = self.auth.secret_params
        query = [(k, "***" if k in secret or _SECRET_NAMES.search(k) else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))

    def location(self, call: Call) -> str:
        """How a request is named in errors and logs: method, redacted URL with params."""
        url = call.url
        if call.params:
            url += ("&" if "?" in url else "?") + urlencode(call.params)
        return f"{call.method} {self.redact(url)} (system {self.id!r})"

    async def send(self, call: Call, *, authenticate: bool = True,
                   parse: Callable[[Response], Any] | None = None) -> Response:
        """Send a request with the system's auth, limits and retry policy.

        Returns the final response (any status); :meth:`check` turns a failed status into an error.

        Args:
            call: the request.
            authenticate: add the system's credentials (False for the token request itself).
            parse: parses a 2xx body into ``Response.data``; its ``BadDataError`` (a truncated or
                unparseable body) is retried like a cut-off body on an idempotent request.

        Raises:
            TransientError: connection errors or timeouts on every attempt.
            BadDataError: the body was cut off, or ``parse`` failed, on every attempt.
            FatalError: the URL is invalid.
        """
        if self.session is None:
            raise FatalError(f"system {self.id!r} is not open; run pipes through Runtime")
        attempt, renewals = 0, 0
        idempotent = call.method not in NON_IDEMPOTENT if call.idempotent is None else call.idempotent
        while True:
            attempt += 1
            headers, params = dict(call.headers), dict(call.params)
            if authenticate and self.authenticates:
                await self.auth.apply(headers, params)
            sent = Call(call.method, call.url, params)
            if self.limiter.interval or self.limiter.paused_until:
                await self.limiter.acquire()
            try:
                response = await self._once(call, headers, sent)
            except aiohttp.InvalidURL as exc:
                where = self.location(sent)
                raise FatalError(f"invalid URL in {where}: {exc}; check base_url and the operation url") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self._backoff_error(exc, attempt, idempotent, self.location(sent))
                continue
            response.attempts = attempt
            if (response.status == 401 and authenticate and self.policy.reauthorize(attempt, renewals)
                    and await self.auth.unauthorized(headers)):
                renewals += 1  # a 401 right after a renewal renews again, within the attempts
                count_retry(self.id, "401")
                log.info("rest.reauthorize", location=response.location, attempt=attempt)
                continue
            if response.status >= 400:
                if await self._backoff_status(response, attempt, idempotent):
                    continue
            elif parse is not None and response.status < 300 and not await self._parsed(response, parse, idempotent):
                continue
            return response

    async def _backoff_error(self, exc: BaseException, attempt: int, idempotent: bool, where: str) -> None:
        """Wait before retrying a failed attempt.

        Raises:
            BadDataError: the body was cut off and no attempt is left.
            TransientError: any other failure and no attempt is left.
        """
        truncated = isinstance(exc, aiohttp.ClientPayloadError)
        delay = self.policy.delay(attempt, None, idempotent=idempotent, sent=_maybe_sent(exc))
        if delay is None:
            what = "response body was cut off" if truncated else f"request failed ({type(exc).__name__}: {exc})"
            message = f"{what} on all {attempt} attempts; the next run retries"
            if truncated:
                raise BadDataError(message, location=where) from exc
            raise TransientError(f"{message}: {where}") from exc
        count_retry(self.id, _error_reason(exc))
        log.warning("rest.retry", location=where, attempt=attempt, error=type(exc).__name__, delay=round(delay, 3))
        await anyio.sleep(delay)

    async def _backoff_status(self, response: Response, attempt: int, idempotent: bool) -> bool:
        """Wait and return True when the failed status is retried, else False."""
        delay = self.policy.delay(attempt, response.status, response.headers.get("Retry-After"),
                                  idempotent=idempotent)
        if delay is None:
            return False
        if response.status == 429:
            self.limiter.pause(delay)
        count_retry(self.id, str(response.status))
        log.warning("rest.retry", location=response.location, attempt=attempt,
                    status=response.status, delay=round(delay, 3))
        await anyio.sleep(delay)
        return True

    async def _parsed(self, response: Response, parse: Callable[[Response], Any], idempotent: bool) -> bool:
        """Parse the body into ``response.data``; True when done, False after waiting for a retry.

        Raises:
            BadDataError: it does not parse and the ``connection`` rule has no attempt left (or
                the request is not idempotent).
        """
        try:
            response.data = parse(response)
            return True
        except BadDataError:
            delay = self.policy.delay(response.attempts, None, idempotent=idempotent)
            if delay is None:
                raise
            count_retry(self.id, "unparseable")
            log.warning("rest.retry", location=response.location, attempt=response.attempts,
                        error="unparseable body", delay=round(delay, 3))
            await anyio.sleep(delay)
            return False

    async def _once(self, call: Call, headers: dict[str, str], sent: Call) -> Response:
        assert self.session is not None
        kwargs: dict[str, Any] = {"headers": headers}
        if sent.params:
            kwargs["params"] = sent.params
        if call.payload is not None:
            if call.payload_type == "json":
                kwargs["data"] = orjson.dumps(call.payload)
                headers.setdefault("Content-Type", "application/json")
            elif call.payload_type == "form":
                kwargs["data"] = call.payload
            else:
                kwargs["data"] = str(call.payload).encode()
        async with self.semaphore:
            self.requests += 1
            started = perf_counter()
            try:
                async with self.session.request(call.method, URL(call.url, encoded=True), **kwargs) as resp:
                    body = await resp.read()
                    status = resp.status
                    # the proxy stays valid after the response is released; no copy needed
                    response = Response(status, resp.headers, body, str(resp.url), sent, self)
            except Exception:
                observe_request(self.id, "error", perf_counter() - started)
                raise
            observe_request(self.id, status, perf_counter() - started)
            return response

    def check(self, response: Response, allowed: frozenset[int] | None = None) -> None:
        """Raise for a status outside ``allowed`` (default 2xx).

        Raises:
            TransientError: 429 or 5xx (the retry policy is exhausted); the next run retries.
            FatalError: any other status.
        """
        ok = (200 <= response.status < 300) if allowed is None else response.status in allowed
        if ok:
            return
        snippet = response.body[:200].decode("utf-8", "replace")
        message = (f"HTTP {response.status} after {response.attempts} attempt(s) from "
                   f"{response.location}: {snippet!r}")
        if response.status == 429 or response.status >= 500:
            raise TransientError(message + "; the next run retries")
        raise FatalError(message + "; check the operation and the system's credentials")

    async def _fetch_token(self, form: dict[str, str]) -> dict[str, Any]:
        auth = self.config.auth
        assert auth is not None and auth.type == "oauth2"
        # a client_credentials token request may be repeated; a refresh_token one may not (the
        # server may have rotated the refresh token already)
        call = Call("POST", self.absolute(auth.token_url), payload=form, payload_type="form",
                    idempotent=auth.grant_type == "client_credentials")
        response = await self.send(call, authenticate=False, parse=parse_body)
        self.check(response)
        return response.data
