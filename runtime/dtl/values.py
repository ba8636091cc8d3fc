"""DTL's value types and their transit JSON form (Sesam's entity data model, "Extension types").

========  =====================  ===========================================================
transit   Python type            notes
========  =====================  ===========================================================
``~t``    :class:`Datetime`      nanoseconds since the Unix epoch, UTC (``~t2015-07-28T09:46:00.123456789Z``)
``~f``    ``decimal.Decimal``    exact decimal
``~b``    ``bytes``              base64 in transit
``~r``    :class:`URI`           the URI text
``~:``    :class:`NI`            a namespaced identifier ``ns:id``
``~u``    ``uuid.UUID``
========  =====================  ===========================================================

Plain JSON values are themselves (``None``, ``bool``, ``int``, ``float``, ``str``, ``list``,
``dict``). In transit ``~~`` escapes a plain string that starts with ``~``.
"""

from __future__ import annotations

import base64
import decimal
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_TRANSIT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")


@dataclass(frozen=True, order=True)
class Datetime:
    """A DTL datetime: integer nanoseconds since the Unix epoch, UTC."""

    ns: int

    @classmethod
    def parse_transit(cls, text: str) -> Datetime:
        """From the part after ``~t`` (``2015-07-28T09:46:00.123456789Z``).

        Raises:
            ValueError: not that form.
        """
        m = _TRANSIT.fullmatch(text)
        if m is None:
            raise ValueError(f"not a transit datetime: {text!r}")
        y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
        whole = datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
        frac = (m[7] or "").ljust(9, "0")
        return cls(int(whole.timestamp()) * 1_000_000_000 + int(frac))

    @classmethod
    def from_datetime(cls, value: datetime) -> Datetime:
        """From a Python datetime (naive = UTC)."""
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        seconds = int(aware.replace(microsecond=0).timestamp())
        return cls(seconds * 1_000_000_000 + aware.microsecond * 1000)

    def to_datetime(self) -> datetime:
        """As an aware UTC Python datetime (sub-microsecond digits dropped)."""
        return datetime.fromtimestamp(self.ns // 1_000_000_000, UTC).replace(
            microsecond=(self.ns % 1_000_000_000) // 1000)

    def iso(self) -> str:
        """``YYYY-MM-DDTHH:MM:SS[.fraction]Z``, the fraction without trailing zeros."""
        seconds, frac = divmod(self.ns, 1_000_000_000)
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if frac:
            text += "." + f"{frac:09d}".rstrip("0")
        return text + "Z"

    def to_transit(self) -> str:
        return "~t" + self.iso()


@dataclass(frozen=True, order=True)
class URI:
    """A DTL URI."""

    value: str

    def to_transit(self) -> str:
        return "~r" + self.value

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class NI:
    """A namespaced identifier ``namespace:id`` (Sesam's NI)."""

    value: str

    def to_transit(self) -> str:
        return "~:" + self.value

    def __str__(self) -> str:
        return self.value


def decode(value: Any) -> Any:
    """Transit JSON -> DTL values, recursively (lists and dict values). A list or dict holding
    no transit string is returned itself, not copied (most stored entities hold none).

    Raises:
        ValueError: a transit string of a known type that does not parse.
    """
    if isinstance(value, str):
        return _decode_str(value) if value[:1] == "~" else value
    if isinstance(value, dict):
        out = value
        for k, v in value.items():
            if isinstance(v, str):
                if v[:1] != "~":
                    continue
                new = _decode_str(v)
            elif isinstance(v, dict | list):
                new = decode(v)
            else:
                continue
            if new is not v:
                if out is value:
                    out = dict(value)
                out[k] = new
        return out
    if isinstance(value, list):
        decoded = [decode(v) for v in value]
        return value if all(a is b for a, b in zip(decoded, value, strict=True)) else decoded
    return value


def _decode_str(text: str) -> Any:
    if len(text) < 2 or text[0] != "~":
        return text
    tag, rest = text[1], text[2:]
    if tag == "~":
        return text[1:]
    if tag == "t":
        return Datetime.parse_transit(rest)
    if tag == "f":
        return decimal.Decimal(rest)
    if tag == "b":
        return base64.b64decode(rest)
    if tag == "r":
        return URI(rest)
    if tag == ":":
        return NI(rest)
    if tag == "u":
        return uuid.UUID(rest)
    return text


def encode(value: Any) -> Any:
    """DTL values -> transit JSON, recursively."""
    if isinstance(value, str):
        return "~" + value if value.startswith("~") else value
    if isinstance(value, Datetime | URI | NI):
        return value.to_transit()
    if isinstance(value, decimal.Decimal):
        return "~f" + str(value)
    if isinstance(value, bytes):
        return "~b" + base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return "~u" + str(value)
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value
