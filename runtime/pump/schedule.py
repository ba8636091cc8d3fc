"""When a pump runs next: pure functions of the pump settings and the clock (no I/O).

Sesam (configuration-pump.rst): ``cron_expression`` wins over ``schedule_interval``; with neither
set a pipe reading only datasets runs every 30 s, any other pipe every 900 s. A failed run is
retried after an exponential backoff, but never later than its regular schedule.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from runtime.config.models import PipeSpec

DATASET_DEFAULT_S = 30.0
OTHER_DEFAULT_S = 900.0


def interval_of(spec: PipeSpec) -> float:
    """The pump interval in seconds (Sesam's defaults when ``schedule_interval`` is unset)."""
    pump = spec.model.pump
    if pump.schedule_interval is not None:
        return pump.schedule_interval
    reads_datasets = bool(spec.reads) and spec.source.config.type == "dataset"
    return DATASET_DEFAULT_S if reads_datasets else OTHER_DEFAULT_S


def next_regular(spec: PipeSpec, now: float, last_start: float | None) -> float:
    """Unix time of the next scheduled run.

    Args:
        spec: the pipe.
        now: the current Unix time.
        last_start: Unix time the last run started, None if none has run in this process.

    Returns:
        For cron: the next fire time after ``now``; for an interval: ``last_start + interval``
        (``now + interval`` before the first run).
    """
    pump = spec.model.pump
    if pump.cron_expression:
        return cron_next(pump.cron_expression, now)
    base = last_start if last_start is not None else now
    return base + interval_of(spec)


def cron_next(expression: str, now: float) -> float:
    """The first fire time of a cron expression (UTC) strictly after ``now`` (Unix seconds)."""
    start = datetime.fromtimestamp(now, UTC)
    return float(croniter(expression, start).get_next(float))


def backoff(failures: int, base_s: float, max_s: float) -> float:
    """Delay before retry number ``failures`` (1-based): ``base_s * 2**(failures-1)``, capped."""
    if failures <= 0:
        return 0.0
    return min(base_s * (2 ** min(failures - 1, 30)), max_s)


def iso(ts: float | None) -> str | None:
    """A Unix time as an ISO-8601 UTC string (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
