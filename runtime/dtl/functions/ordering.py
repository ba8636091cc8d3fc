"""DTL's total order over mixed values, and value identity for set-like functions.

Order (Sesam, ``entity-data-model.rst``): Null < Boolean < Integer/Float/Decimal < Datetime <
UUID < NI < URI < String < Dict < List (tuple) < Bytes. Numbers compare by value, strings by code
point (ASCII order), dicts by their sorted key/value pairs, lists element by element.
"""

from __future__ import annotations

import decimal
import uuid
from typing import Any

from runtime.dtl.values import NI, URI, Datetime


def _rank(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float | decimal.Decimal):
        return 2
    for rank, kind in enumerate((Datetime, uuid.UUID, NI, URI, str, dict, list, bytes), start=3):
        if isinstance(value, kind):
            return rank
    raise TypeError(f"not a DTL value: {type(value).__name__}")


def sort_key(value: Any) -> tuple[int, Any]:
    """A key ordering any DTL values by DTL's mixed-type order; equal DTL values get equal,
    hashable keys (``1``, ``1.0`` and ``Decimal("1")`` too).

    Raises:
        TypeError: ``value`` is not a DTL value.
    """
    kind = type(value)  # the common exact types first (bool is not int here)
    if kind is str:
        return (7, value)
    if kind is int:
        return (2, value)
    rank = _rank(value)
    if rank == 0:
        return (0, 0)
    if isinstance(value, dict):
        return (rank, tuple((k, sort_key(v)) for k, v in sorted(value.items())))
    if isinstance(value, list):
        return (rank, tuple(sort_key(v) for v in value))
    return (rank, value)
