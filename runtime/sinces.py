"""Datetime since values: compared by instant, moved back in the source's own format.

A since is whatever the source put in ``_updated`` (Sesam): an integer offset, an opaque string,
or an ISO-8601 datetime string. Datetime strings of one source may differ in form from one value
to the next (``"2024-01-01 10:02:00"``, ``"2024-01-01T10:02:00.000Z"``), so two of them are
compared by the instant they name, never as strings; and a partial rescan moves a since back
without changing its form, because the source receives it as it sent it.

Recognised: ISO-8601 extended format ``YYYY-MM-DD``, optionally followed by ``T`` or a space,
``HH:MM``, optional ``:SS``, an optional fraction (``.`` or ``,``, any number of digits) and an
optional offset (``Z``, ``±HH``, ``±HHMM``, ``±HH:MM``). A datetime without an offset is taken
as UTC when compared with one that has an offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ISO_DATETIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?P<sep>[T ])(?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?(?:(?P<dot>[.,])(?P<frac>\d+))?"
    r"(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


@dataclass(frozen=True)
class IsoSince:
    """A datetime since and the form it was written in.

    Attributes:
        moment: the instant (timezone-aware when the string has an offset).
        form: the regular-expression match of the original string (its parts give the form).
    """

    moment: datetime
    form: re.Match[str]

    def minus(self, seconds: float) -> str:
        """The since ``seconds`` earlier, written in the same form. Digits the form does not
        show are truncated, so the result is never later than the exact instant."""
        earlier = self.moment - timedelta(seconds=seconds)
        f = self.form
        out = earlier.strftime("%Y-%m-%d")
        if f["sep"] is None:
            return out
        out += f["sep"] + earlier.strftime("%H:%M") + (earlier.strftime(":%S") if f["sec"] else "")
        if f["frac"]:
            out += f["dot"] + f"{earlier.microsecond:06d}".ljust(len(f["frac"]), "0")[: len(f["frac"])]
        return out + (f["tz"] or "")


def parse_since(value: Any) -> IsoSince | None:
    """The datetime in ``value``, or None when it is not an ISO-8601 datetime string as
    described in the module docstring (integers, opaque strings, impossible dates)."""
    if value.__class__ is not str:
        return None
    form = ISO_DATETIME.fullmatch(value)
    if form is None:
        return None
    try:
        moment = datetime.fromisoformat(_normalised(form))
    except ValueError:  # e.g. month 13
        return None
    return IsoSince(moment, form)


def _normalised(form: re.Match[str]) -> str:
    """The match rewritten in the subset ``datetime.fromisoformat`` reads on every Python we
    support: ``T``, seconds, at most 6 fraction digits, ``+HH:MM``."""
    if form["sep"] is None:
        return form["date"]
    frac = (form["frac"] or "")[:6].ljust(6, "0")
    tz = form["tz"] or ""
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif tz:
        digits = tz[1:].replace(":", "").ljust(4, "0")
        tz = f"{tz[0]}{digits[:2]}:{digits[2:]}"
    return f"{form['date']}T{form['hm']}{form['sec'] or ':00'}.{frac}{tz}"


def since_order(value: Any) -> Any:
    """A key that orders sinces by instant: an aware UTC datetime for a datetime string, the
    value itself otherwise (so integers and opaque strings compare as before, and comparing a
    datetime with anything else raises ``TypeError``)."""
    parsed = parse_since(value)
    if parsed is None:
        return value
    moment = parsed.moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

