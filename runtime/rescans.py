"""Which kind of run comes next: incremental, full rescan or partial rescan (Sesam's pump keys).

* ``rescan_run_count: N`` — every Nth run is a full rescan.
* ``rescan_cron_expression`` — a full rescan when the cron schedule fired since the last one.
* ``partial_rescan_run_count: N`` + ``partial_rescan_delta: D`` — every Nth run starts with since
  moved back by D: an integer since by D, an ISO-8601 datetime since by D seconds. A partial
  rescan re-reads recent changes (late-arriving rows) and does no deletion tracking.

The bookkeeping lives in the pipe's info document: ``runs_since_full``, ``runs_since_partial``
and ``last_full_us`` (microseconds since the epoch), updated after each completed run;
``partial_failures`` counts failed partial rescans in a row, and ``partial_rescan_skipped``
says why the last one that kept failing was given up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from croniter import croniter

from runtime.config.models import PumpConfig
from runtime.sinces import parse_since

log = structlog.get_logger("sluice.rescans")

RunKind = Literal["incremental", "full", "partial"]
PARTIAL_RESCAN_ATTEMPTS = 3
"""Failed runs in a row after which a partial rescan is skipped (see :func:`after_run`)."""


def choose_run(pump: PumpConfig, info: dict[str, Any], since: Any, now: datetime) -> tuple[RunKind, Any]:
    """Decide the next run's kind and, for a partial rescan, the since it starts from.

    Args:
        pump: the pipe's pump settings.
        info: the pipe's stored info document.
        since: the pipe's stored since.
        now: the current time (timezone-aware).

    Returns:
        ``(kind, start_since)``; ``start_since`` is meaningful only for ``partial``.
    """
    if since is None:
        return "full", None
    if pump.rescan_run_count and info.get("runs_since_full", 0) + 1 >= pump.rescan_run_count:
        return "full", None
    if pump.rescan_cron_expression:
        last_fire = croniter(pump.rescan_cron_expression, now).get_prev(datetime)
        last_full = info.get("last_full_us")
        if last_full is None or last_fire.timestamp() * 1e6 > last_full:
            return "full", None
    if (
        pump.partial_rescan_run_count
        and pump.partial_rescan_delta
        and info.get("runs_since_partial", 0) + 1 >= pump.partial_rescan_run_count
    ):
        moved = rewind(since, pump.partial_rescan_delta)
        if moved is not None:
            return "partial", moved
    return "incremental", None


def rewind(since: Any, delta: float) -> Any:
    """Move a since value back by ``delta``: an integer by ``int(delta)``, an ISO-8601 datetime
    string by ``delta`` seconds, written in the form the source used (``"2024-01-01 10:02:00"``
    stays space-separated, ``".000Z"`` keeps its fraction and offset; see
    :mod:`runtime.sinces`). None when the value is neither (such a since cannot be rewound)."""
    if isinstance(since, bool):
        return None
    if isinstance(since, int):
        return since - int(delta)
    parsed = parse_since(since)
    return None if parsed is None else parsed.minus(delta)


def after_run(
    kind: RunKind, info: dict[str, Any], status: str, now: datetime, *, error: str | None = None
) -> dict[str, Any]:
    """The info changes to store after a run of ``kind`` that ended with ``status``
    (``completed``, ``failed`` or ``stopped``; only completed runs count).

    A failed partial rescan is tried again (the pump backs off as after any failure), at most
    :data:`PARTIAL_RESCAN_ATTEMPTS` times in a row: then it is skipped (the count starts over,
    so the next run is incremental) and ``partial_rescan_skipped`` records its error.
    """
    if status == "failed" and kind == "partial":
        failures = info.get("partial_failures", 0) + 1
        if failures < PARTIAL_RESCAN_ATTEMPTS:
            return {"partial_failures": failures}
        log.warning("rescan.partial_skipped", failures=failures, error=error)
        skipped = {"failures": failures, "error": error, "at_us": _us(now)}
        return {"partial_failures": 0, "runs_since_partial": 0, "partial_rescan_skipped": skipped}
    if status != "completed":
        return {}
    full = kind == "full"
    partial = kind == "partial"
    return {
        "runs_since_full": 0 if full else info.get("runs_since_full", 0) + 1,
        "runs_since_partial": 0 if partial else info.get("runs_since_partial", 0) + 1,
        "partial_failures": 0,
        **({"last_full_us": _us(now)} if full else {}),
    }


def _us(now: datetime) -> int:
    return int(now.astimezone(UTC).timestamp() * 1e6)
