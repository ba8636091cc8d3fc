"""Date and time functions (Sesam ``hub/dtl/dtl-functions-date-and-time.rst``).

Datetimes are :class:`~runtime.dtl.values.Datetime` (UTC nanoseconds). FORMAT is a Python
``strftime``/``strptime`` format; an optional leading TIMEZONE is an IANA name (``Europe/Oslo``).
UNIT is one of year, month, week, day, hour, minute, second, ms, us, ns. Values that are not
datetimes (or do not parse) are dropped; a list input gives a list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta

from runtime.dtl.functions import first, function
from runtime.dtl.functions.args import int_arg, map_typed, str_arg
from runtime.dtl.values import Datetime
from runtime.errors import FatalError

_NS = {"week": 604_800 * 10**9, "day": 86_400 * 10**9, "hour": 3_600 * 10**9,
       "minute": 60 * 10**9, "second": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_CALENDAR = ("year", "month")


def _zone(name: Any, function_name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(first(name)))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FatalError(f"DTL function {function_name}: unknown timezone {first(name)!r}; "
                         "use an IANA name such as 'Europe/Oslo'") from exc


def _unit(unit: Any, function_name: str) -> str:
    name = first(unit)
    if name not in _NS and name not in _CALENDAR:
        raise FatalError(f"DTL function {function_name}: unknown unit {name!r}; use one of "
                         f"{list(_CALENDAR) + list(_NS)}")
    return str(name)


def _with_wall_clock(value: Datetime, op: Callable[[datetime], datetime]) -> Datetime:
    """``op`` on the naive UTC wall clock of ``value``, sub-microsecond digits kept."""
    wall = value.to_datetime().replace(tzinfo=None)
    return Datetime(Datetime.from_datetime(op(wall)).ns + value.ns % 1000)


@function("now", min_args=0, max_args=0)
def now() -> Datetime:
    """The current time."""
    return Datetime(time.time_ns())


@function("datetime-parse", min_args=2, max_args=3)
def datetime_parse(*args: Any) -> Any:
    """``[datetime-parse, TIMEZONE?, FORMAT, VALUES]``: strings parsed with FORMAT; a time without
    offset is in TIMEZONE (default UTC)."""
    zone = _zone(args[0], "datetime-parse") if len(args) == 3 else UTC
    fmt = str_arg("datetime-parse", "FORMAT", args[-2])

    def parse(text: str) -> Datetime | None:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            return None
        return Datetime.from_datetime(parsed if parsed.tzinfo else parsed.replace(tzinfo=zone))
    return map_typed(args[-1], str, parse)


@function("datetime-format", min_args=2, max_args=3)
def datetime_format(*args: Any) -> Any:
    """``[datetime-format, TIMEZONE?, FORMAT, VALUES]``: datetimes as text, in TIMEZONE
    (default UTC)."""
    zone = _zone(args[0], "datetime-format") if len(args) == 3 else UTC
    fmt = str_arg("datetime-format", "FORMAT", args[-2])
    return map_typed(args[-1], Datetime, lambda d: d.to_datetime().astimezone(zone).strftime(fmt))


@function("datetime-plus", min_args=3, max_args=3)
def datetime_plus(unit: Any, amount: Any, values: Any) -> Any:
    """``[datetime-plus, UNIT, AMOUNT, VALUES]``: AMOUNT (an integer, may be negative) UNITs
    added; years and months by the calendar."""
    name, n = _unit(unit, "datetime-plus"), int_arg("datetime-plus", "AMOUNT", amount)
    if name in _CALENDAR:
        delta = relativedelta(**{name + "s": n})  # type: ignore[arg-type]
        return map_typed(values, Datetime, lambda d: _with_wall_clock(d, lambda w: w + delta))
    return map_typed(values, Datetime, lambda d: Datetime(d.ns + n * _NS[name]))


@function("datetime-diff", min_args=3, max_args=3)
def datetime_diff(unit: Any, start: Any, end: Any) -> int | None:
    """``[datetime-diff, UNIT, D1, D2]``: D1 - D2 in whole UNITs, rounded towards zero; null if
    either is not a datetime."""
    name, a, b = _unit(unit, "datetime-diff"), first(start), first(end)
    if not (isinstance(a, Datetime) and isinstance(b, Datetime)):
        return None
    if name in _CALENDAR:
        delta = relativedelta(a.to_datetime(), b.to_datetime())
        return delta.years if name == "year" else delta.years * 12 + delta.months
    diff = a.ns - b.ns
    return abs(diff) // _NS[name] * (1 if diff >= 0 else -1)


@function("datetime-shift", min_args=3, max_args=3)
def datetime_shift(from_zone: Any, to_zone: Any, values: Any) -> Any:
    """``[datetime-shift, FROM_TZ, TO_TZ, VALUES]``: reinterprets each value's wall clock as
    FROM_TZ time and gives the TO_TZ wall clock of that instant, stored as UTC."""
    source, target = _zone(from_zone, "datetime-shift"), _zone(to_zone, "datetime-shift")

    def shift(wall: datetime) -> datetime:
        return wall.replace(tzinfo=source).astimezone(target).replace(tzinfo=None)
    return map_typed(values, Datetime, lambda d: _with_wall_clock(d, shift))
