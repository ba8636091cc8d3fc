"""When a pump runs next: pure functions of the pump settings and the clock (no I/O).

Sesam (configuration-pump.rst): ``cron_expression`` wins over ``schedule_interval``; with neither
set a pipe reading only datasets runs every 30 s ± 1.5 s, any other pipe every 900 s ± 45 s (the
default intervals get ±5 % jitter so pipes started together spread out). Cron and long-interval
(over an hour) start times are persisted (the last run's ``started_us`` in the pipe state), so a
run missed while the daemon was down happens as soon as it is back. A failed run is retried after
an exponential backoff, but never later than its regular schedule.

A pipe on an interval that has never run, and any pipe whose last run was interrupted (the process
running it was killed), runs within :data:`SOON_S` seconds of the pump starting (at a random
moment, so pipes started together spread out) instead of one interval later: a new daemon does
something at once. A cron pipe that has never run waits for its first fire time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

from croniter import croniter

from runtime.config.models import PipeSpec

DATASET_DEFAULT_S = 30.0
OTHER_DEFAULT_S = 900.0
DEFAULT_JITTER = 0.05
"""Fraction of a default interval by which a run moves, either way (Sesam: 30 s ± 1.5 s)."""
PERSISTED_OVER_S = 3600.0
"""Intervals longer than this (seconds) resume from the persisted last start after a restart."""

SOON_S = 5.0
"""A never-run interval pipe, or an interrupted run, starts within this many seconds (uniform)."""

Random = Callable[[], float]
"""A source of floats in [0, 1) (``random.random``; tests pass a fixed one)."""


def interval_of(spec: PipeSpec) -> float:
    """The pump interval in seconds (Sesam's defaults when ``schedule_interval`` is unset)."""
    pump = spec.model.pump
    if pump.schedule_interval is not None:
        return pump.schedule_interval
    reads_datasets = bool(spec.reads) and spec.source.config.type == "dataset"
    return DATASET_DEFAULT_S if reads_datasets else OTHER_DEFAULT_S


def _step(spec: PipeSpec, rand: Random) -> float:
    """Seconds to the next interval run: the interval, jittered when it is a default."""
    interval = interval_of(spec)
    if spec.model.pump.schedule_interval is not None:
        return interval
    return interval * (1 + DEFAULT_JITTER * (2 * rand() - 1))


def next_regular(spec: PipeSpec, now: float, last_start: float | None, rand: Random = random.random) -> float:
    """Unix time of the next scheduled run.

    Args:
        spec: the pipe.
        now: the current Unix time.
        last_start: Unix time the last run started (this process's, or the persisted one read
            when the pump started), None if unknown.
        rand: jitter source for default intervals.

    Returns:
        For cron: the next fire time after ``now``; for an interval: ``last_start + interval``
        (``now + interval`` before the first run).
    """
    pump = spec.model.pump
    if pump.cron_expression:
        return cron_next(pump.cron_expression, now)
    base = last_start if last_start is not None else now
    return base + _step(spec, rand)


def first_regular(
    spec: PipeSpec, now: float, started: float | None, ended: float | None, rand: Random = random.random
) -> float:
    """Unix time of the first scheduled run after the pump starts (Sesam).

    Args:
        spec: the pipe.
        now: the current Unix time.
        started, ended: Unix times the pipe's last run started and ended (any process; persisted
            in the pipe state), or None. Times after ``now`` (a clock set back) count as ``now``.
        rand: jitter source (default intervals, first runs).

    Returns:
        ``now`` when a cron fire time passed after the last run ended, or the end of an interval
        over :data:`PERSISTED_OVER_S` passed since it started (a run missed while the daemon was
        down); :func:`soon` for an interval pipe that never ran (``started`` None); otherwise the
        next cron fire time, ``started + interval`` for a long interval, or ``now + interval``.
        While the daemon runs, a cron fire time passing during a run is skipped (the next run is
        the first fire time after the run ends), and so it is here.
    """
    pump = spec.model.pump
    if pump.cron_expression:
        end = ended if ended is not None else started
        missed = end is not None and cron_next(pump.cron_expression, min(end, now)) <= now
        return now if missed else cron_next(pump.cron_expression, now)
    if started is None:
        return soon(now, rand)
    if interval_of(spec) > PERSISTED_OVER_S:
        return max(now, min(started, now) + interval_of(spec))
    return now + _step(spec, rand)


def soon(now: float, rand: Random = random.random) -> float:
    """A Unix time in ``[now, now + SOON_S)``: the first run of a new pipe, or the resumption of an
    interrupted one."""
    return now + SOON_S * rand()


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
