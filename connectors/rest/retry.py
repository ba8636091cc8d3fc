"""Retry decisions and the shared rate limit of a REST system; both free of I/O.

Defaults (Sesam's ``retry_strategy`` idea, peers.md §4 "Retries"): 429, 5xx and connection errors
are retried up to 5 attempts with exponential backoff (0.5 s, 1 s, 2 s, ...) with a jitter of
+-50 %, capped at 30 s (the cap applies after the jitter); a ``Retry-After`` header (seconds,
also fractional, or an HTTP date, read as GMT per RFC 9110 §5.6.7 even when it says ``-0000``
or nothing) is honoured up to
``max_retry_after``. Every other status is not retried.

Non-idempotent methods (POST, PATCH; RFC 9110 §9.2.2) are retried by default only where the
request cannot have been acted on: a 429, and a connection that failed before the request was
sent (connect error or connect timeout). After a 5xx, a timeout or a dropped connection the server
may already have done the write, so those are retried only when the rule (or the system) sets
``retry_non_idempotent: true``. A 2xx whose body does not parse counts as a connection failure
(the ``connection`` rule): on a GET it is retried, on a POST only with ``retry_non_idempotent``.
A 401 is renewed-and-repeated by :meth:`RetryPolicy.reauthorize`, not by :meth:`RetryPolicy.delay`.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

import anyio

from connectors.rest.models import RetryRule, parse_codes

DEFAULT_RETRIED = frozenset({429, *range(500, 600)})
NON_IDEMPOTENT = frozenset({"POST", "PATCH"})
_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_NO_RETRY = RetryRule(retry=False, max_attempts=1)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value; None if absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.match(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are GMT, never local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryPolicy:
    """Per-status retry rules: which failures are retried, how often, how long to wait.

    Args:
        strategy: the system's ``retry_strategy`` (keys: ``"429"``, ``"500-599"``, ``"502,504"``,
            ``"connection"``, ``"default"``); a key naming fewer codes wins over a wider one.
        rand: random source in [0, 1) (tests pass a fixed one).
        retry_non_idempotent: the system's default for rules that do not set it.
    """

    def __init__(self, strategy: dict[str, RetryRule] | None = None,
                 rand: Callable[[], float] = random.random, retry_non_idempotent: bool = False) -> None:
        strategy = strategy or {}
        self.rand = rand
        self.retry_non_idempotent = retry_non_idempotent
        self.connection = strategy.get("connection", RetryRule())
        self.default_rule = strategy.get("default")
        self.rules: list[tuple[frozenset[int], RetryRule]] = sorted(
            ((parse_codes(k), r) for k, r in strategy.items() if k not in ("connection", "default")),
            key=lambda item: len(item[0]),
        )

    def rule(self, status: int | None) -> RetryRule:
        """The rule for a status (None: a connection error or timeout)."""
        if status is None:
            return self.connection
        for codes, rule in self.rules:
            if status in codes:
                return rule
        if self.default_rule is not None:
            return self.default_rule
        return RetryRule() if status in DEFAULT_RETRIED else _NO_RETRY

    def reauthorize(self, attempt: int, renewals: int) -> bool:
        """Whether a 401 to attempt ``attempt`` is repeated with renewed credentials.

        The first renewal always (a token expiring is routine); after ``renewals`` > 0 (a 401
        right after a renewal) while a rule keyed for 401 (else the default 5 attempts) has an
        attempt left, attempts of every kind counted.
        """
        if renewals == 0:
            return True
        rule = next((r for codes, r in self.rules if 401 in codes), RetryRule())
        return rule.retry and attempt < rule.max_attempts

    def delay(self, attempt: int, status: int | None, retry_after: str | None = None, *,
              idempotent: bool = True, sent: bool = True) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        Args:
            attempt: attempts made so far (1 after the first failure).
            status: the failed response's status, None for a connection error.
            retry_after: the response's ``Retry-After`` header, if any.
            idempotent: False for a POST / PATCH: see the module docstring.
            sent: False when a connection error happened before the request was sent.
        """
        rule = self.rule(status)
        if not rule.retry or attempt >= rule.max_attempts:
            return None
        if not idempotent and status != 429 and sent:
            allowed = rule.retry_non_idempotent
            if not (self.retry_non_idempotent if allowed is None else allowed):
                return None
        backoff = min(rule.max_delay, rule.base_delay * 2 ** (attempt - 1) * (0.5 + self.rand()))
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            if asked > rule.max_retry_after:
                return None
            return max(asked, backoff if status != 429 else 0.0)
        return backoff


class RateLimiter:
    """Spaces requests ``1 / rate`` seconds apart across every pipe of a system; ``pause``
    holds everyone back (a 429's ``Retry-After`` slows the whole system, not one request).

    Args:
        rate: requests per second, None for no limit.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.next_slot = 0.0
        self.paused_until = 0.0

    def reserve(self) -> float:
        """Reserve the next slot; returns the seconds to wait before using it."""
        now = self.clock()
        slot = max(now, self.next_slot, self.paused_until)
        self.next_slot = slot + self.interval
        return slot - now

    def pause(self, seconds: float) -> None:
        """Let no request start for ``seconds``."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    async def acquire(self) -> None:
        """Wait for this request's slot."""
        wait = self.reserve()
        if wait > 0:
            await anyio.sleep(wait)
