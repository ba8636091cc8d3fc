"""The pump's schedule functions (pure, no daemon): jitter of Sesam's default intervals and the
first run after a restart for cron and long-interval pipes (start times persisted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.config import load_config
from runtime.plugins import default_registry
from runtime.pump.schedule import SOON_S, first_regular, next_regular

HOUR = 3600.0


def _spec(write_config: Any, source: dict[str, Any] | None = None, **pump: Any) -> Any:
    pipe = {"_id": "p", "type": "pipe", "source": source or {"type": "embedded", "entities": []}, "pump": pump}
    return load_config(write_config([pipe]), default_registry()).pipes["p"]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("source", "interval"), [
    (None, 900.0),
    ({"type": "dataset", "dataset": "x"}, 30.0),
])
def test_default_intervals_are_jittered_by_five_percent(write_config, source, interval):
    spec = _spec(write_config, source)
    assert next_regular(spec, 1000.0, 1000.0, rand=lambda: 0.0) == pytest.approx(1000 + interval * 0.95)
    assert next_regular(spec, 1000.0, 1000.0, rand=lambda: 0.5) == pytest.approx(1000 + interval)
    assert next_regular(spec, 1000.0, None, rand=lambda: 0.999999) == pytest.approx(1000 + interval * 1.05)


def test_an_explicit_interval_is_not_jittered(write_config):
    spec = _spec(write_config, schedule_interval=60)
    assert next_regular(spec, 1000.0, 900.0, rand=lambda: 0.0) == 960.0


def test_a_cron_run_missed_while_down_runs_at_once(write_config):
    spec = _spec(write_config, cron_expression="0 2 * * *")  # 02:00 UTC daily
    now = _ts("2026-11-21T09:00:00")
    yesterday = _ts("2026-11-20T02:00:00")
    assert first_regular(spec, now, yesterday, yesterday + 60) == now  # 2026-11-21T02:00 was missed
    today = _ts("2026-11-21T02:00:00")
    assert first_regular(spec, now, today, today + 60) == _ts("2026-11-22T02:00:00")
    assert first_regular(spec, now, None, None) == _ts("2026-11-22T02:00:00")  # never ran: the next fire time


def test_a_fire_time_passing_during_a_long_cron_run_is_skipped_as_without_a_restart(write_config):
    spec = _spec(write_config, cron_expression="0 * * * *")  # hourly
    started, ended = _ts("2026-11-21T10:00:01"), _ts("2026-11-21T12:00:30")
    assert first_regular(spec, _ts("2026-11-21T12:30:00"), started, ended) == _ts("2026-11-21T13:00:00")
    assert first_regular(spec, _ts("2026-11-21T13:30:00"), started, ended) == _ts("2026-11-21T13:30:00")


def test_a_long_interval_resumes_from_the_persisted_start(write_config):
    spec = _spec(write_config, schedule_interval=6 * HOUR)
    now = 100 * HOUR
    assert first_regular(spec, now, now - 2 * HOUR, now - HOUR) == now + 4 * HOUR
    assert first_regular(spec, now, now - 7 * HOUR, None) == now  # overdue: at once


def test_a_persisted_start_after_now_counts_as_now(write_config):  # the clock was set back
    now = 100 * HOUR
    assert first_regular(_spec(write_config, schedule_interval=6 * HOUR), now, now + 48 * HOUR, None) == now + 6 * HOUR
    cron = _spec(write_config, cron_expression="0 * * * *")
    assert first_regular(cron, now, now + 48 * HOUR, now + 49 * HOUR) == now + HOUR


def test_a_short_interval_starts_afresh_after_a_restart(write_config):
    spec = _spec(write_config, schedule_interval=HOUR)
    assert first_regular(spec, 50 * HOUR, 10 * HOUR, 11 * HOUR) == 51 * HOUR


@pytest.mark.parametrize("pump", [{}, {"schedule_interval": 6 * HOUR}, {"schedule_interval": 60}])
def test_an_interval_pipe_that_never_ran_starts_within_seconds_at_a_random_moment(write_config, pump):
    spec = _spec(write_config, **pump)
    assert first_regular(spec, 1000.0, None, None, rand=lambda: 0.0) == 1000.0
    assert first_regular(spec, 1000.0, None, None, rand=lambda: 0.5) == 1000.0 + SOON_S / 2
    assert first_regular(spec, 1000.0, None, None, rand=lambda: 0.999) < 1000.0 + SOON_S <= 1005.0
    assert first_regular(spec, 1000.0, 990.0, None, rand=lambda: 0.5) > 1000.0 + SOON_S  # it ran: as before
