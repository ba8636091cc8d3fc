"""Authentication of a REST system: basic, bearer, API key (header or query), OAuth2.

Each auth object adds credentials to an outgoing request (:meth:`Auth.apply`) and says whether a
401 is worth one more attempt (:meth:`Auth.unauthorized`). OAuth2 fetches tokens through a
function the system gives it (``fetch(form) -> token response``), so it is testable without a
server: the token is refreshed ``refresh_window`` seconds before it expires (at most half its
lifetime before, so a short-lived token is still reused), and at once after a 401. ``expires_in``
may be a number or a numeric string (RFC 6749 §5.1 says number; some servers send "3600").
Secrets are revealed only here, when a request is built.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from connectors.rest.models import ApiKeyAuth, AuthConfig, BasicAuth, BearerAuth, OAuth2Auth
from runtime.config.secrets import reveal
from runtime.errors import FatalError

TokenFetch = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]


class Auth:
    """No authentication; the base of the others."""

    secret_params: frozenset[str] = frozenset()

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add credentials to a request's headers / query parameters (in place)."""

    async def unauthorized(self, headers: dict[str, str]) -> bool:
        """Called after a 401 to a request sent with ``headers``; True when a new attempt may
        succeed (new credentials)."""
        return False


class StaticAuth(Auth):
    """Basic, bearer and API-key authentication: fixed credentials."""

    def __init__(self, config: BasicAuth | BearerAuth | ApiKeyAuth) -> None:
        self.header: tuple[str, str] | None = None
        self.param: tuple[str, str] | None = None
        if isinstance(config, BasicAuth):
            pair = f"{reveal(config.username)}:{config.password.reveal()}".encode()
            self.header = ("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
        elif isinstance(config, BearerAuth):
            self.header = ("Authorization", "Bearer " + config.token.reveal())
        elif config.location == "header":
            self.header = (config.name, config.value.reveal())
        else:
            self.param = (config.name, config.value.reveal())
            self.secret_params = frozenset({config.name})

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        if self.header is not None:
            headers[self.header[0]] = self.header[1]
        if self.param is not None:
            params[self.param[0]] = self.param[1]


class OAuth2(Auth):
    """OAuth2 client-credentials or refresh-token grant with automatic refresh.

    Args:
        config: the ``oauth2`` auth config.
        fetch: posts a token request form and returns the parsed JSON response; raises
            :class:`FatalError` / :class:`TransientError` itself on HTTP failures.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, config: OAuth2Auth, fetch: TokenFetch,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.fetch = fetch
        self.clock = clock
        self.token: str | None = None
        self.expires_at = 0.0
        self.refresh_at = 0.0
        self.refresh_token = config.refresh_token.reveal() if config.refresh_token else None
        self.lock = anyio.Lock()
        self.fetches = 0

    def _fresh(self) -> bool:
        return self.token is not None and self.clock() < self.refresh_at

    def _form(self) -> dict[str, str]:
        c = self.config
        form = {"grant_type": c.grant_type, "client_id": reveal(c.client_id)}
        if c.client_secret is not None:
            form["client_secret"] = c.client_secret.reveal()
        if c.grant_type == "refresh_token" and self.refresh_token:
            form["refresh_token"] = self.refresh_token
        if c.scope:
            form["scope"] = c.scope
        return form

    async def _renew(self) -> None:
        body = await self.fetch(self._form())
        self.fetches += 1
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise FatalError(
                "OAuth2 token response has no access_token; check token_url, client_id and the "
                "grant type of the system's auth"
            )
        ttl = _lifetime(body.get("expires_in"), self.config.default_expires_in)
        now = self.clock()
        self.token = token
        self.expires_at = now + ttl
        self.refresh_at = self.expires_at - min(self.config.refresh_window, ttl / 2)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            self.refresh_token = rotated

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        if not self._fresh():
            async with self.lock:
                if not self._fresh():
                    await self._renew()
        headers["Authorization"] = f"Bearer {self.token}"

    async def unauthorized(self, headers: dict[str, str]) -> bool:
        """Forget the token the failed request used (unless another request already replaced
        it), so the next attempt fetches a new one."""
        if headers.get("Authorization") == f"Bearer {self.token}":
            self.token = None
        return True


def _lifetime(value: Any, default: float) -> float:
    """Seconds a token lives from a token response's ``expires_in`` (number or numeric string);
    ``default`` when it is absent, not a positive finite number, or a bool."""
    if isinstance(value, bool):
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return default
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return default


def make_auth(config: AuthConfig | None, fetch: TokenFetch) -> Auth:
    """The auth object for a system's ``auth`` config (None: no authentication)."""
    if config is None:
        return Auth()
    if isinstance(config, OAuth2Auth):
        return OAuth2(config, fetch)
    return StaticAuth(config)
