"""Which kind of run comes next: incremental, full rescan or partial rescan (Sesam's pump keys).

* ``rescan_run_count: N`` — every Nth run is a full rescan.
* ``rescan_cron_expression`` — a full rescan when the cron schedule fired since the last one.
* ``partial_rescan_run_count: N`` + ``partial_rescan_delta: D`` — every Nth run starts with since
  moved back by D: an integer since by D, an ISO-8601 datetime since by D seconds. A partial
  rescan re-reads recent changes (late-arriving rows) and does no deletion tracking.

The bookkeeping lives in the pipe's info document: ``runs_since_full``, ``runs_since_partial``
and ``last_full_us`` (microseconds since the epoch), updated after each completed run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from croniter import croniter

from runtime.config.models import PumpConfig

RunKind = Literal["incremental", "full", "partial"]


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
    """Move a since value back by ``delta``; None when the value is neither an integer nor an
    ISO-8601 datetime string (such a since cannot be rewound)."""
    if isinstance(since, bool):
        return None
    if isinstance(since, int):
        return since - int(delta)
    if isinstance(since, str):
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            return None
        earlier = (moment - timedelta(seconds=delta)).isoformat()
        return earlier.replace("+00:00", "Z") if since.endswith("Z") else earlier
    return None


def after_run(kind: RunKind, info: dict[str, Any], completed: bool, now: datetime) -> dict[str, Any]:
    """The info changes to store after a run of ``kind`` (only completed runs count)."""
    if not completed:
        return {}
    full = kind == "full"
    partial = kind == "partial"
    return {
        "runs_since_full": 0 if full else info.get("runs_since_full", 0) + 1,
        "runs_since_partial": 0 if partial else info.get("runs_since_partial", 0) + 1,
        **({"last_full_us": int(now.astimezone(UTC).timestamp() * 1e6)} if full else {}),
    }

