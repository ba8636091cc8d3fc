"""Join keys: the typed text under which a hop's secondary index stores a value.

Two values get the same key exactly when DTL's ``eq`` holds for them
(:func:`runtime.dtl.functions.core.dtl_equal`): ``1``, ``1.0`` and ``~f1.00`` share ``n:1``,
while the string ``"1"`` is ``s:1`` and ``true`` is ``b:1`` (never equal to ``1``). A list joins by
any of its members (Sesam's value-set overlap, ``hub/dtl/joins.rst``); null never joins, so it has
no key. Values are DTL values (:mod:`runtime.dtl.values`); stored entities are decoded first.

======================  ==================  ======================  ==================
value                   key                 value                   key
======================  ==================  ======================  ==================
``true``/``false``      ``b:1``/``b:0``     ``int/float/Decimal``   ``n:`` + exact normalised decimal
``str``                 ``s:`` + text       ``Datetime``            ``t:`` + nanoseconds
``UUID``                ``u:`` + hex        ``NI``                  ``~:`` + ``ns:id``
``URI``                 ``r:`` + text       ``bytes``               ``x:`` + hex
``dict``                ``d:`` + sorted transit JSON
======================  ==================  ======================  ==================
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from runtime.dtl import values

_EXACT = decimal.Context(prec=1000)  # float -> Decimal is exact; normalising must not round it


def join_keys(value: Any) -> list[str]:
    """The distinct keys of ``value``'s members (a non-list is a one-member list; nested lists
    are flattened; nulls dropped), in first-seen order."""
    out: dict[str, None] = {}
    _collect(value, out)
    return list(out)


def _collect(value: Any, out: dict[str, None]) -> None:
    if isinstance(value, list | tuple):
        for v in value:
            _collect(v, out)
    elif value is not None:
        out[join_key(value)] = None


def join_key(value: Any) -> str:
    """The key of one non-null, non-list value (see the module's table)."""
    if isinstance(value, bool):
        return "b:1" if value else "b:0"
    if isinstance(value, int | float | decimal.Decimal):
        number = _EXACT.normalize(decimal.Decimal(value))
        return f"n:{number}"
    if isinstance(value, str):
        return f"s:{value}"
    if isinstance(value, values.Datetime):
        return f"t:{value.ns}"
    if isinstance(value, uuid.UUID):
        return f"u:{value.hex}"
    if isinstance(value, values.NI):
        return f"~:{value.value}"
    if isinstance(value, values.URI):
        return f"r:{value.value}"
    if isinstance(value, bytes):
        return f"x:{value.hex()}"
    return "d:" + orjson.dumps(values.encode(value), option=orjson.OPT_SORT_KEYS).decode()


def path_name(keys: Sequence[str]) -> str:
    """The stored name of an index's property path: ``["address", "id"]`` -> ``'["address","id"]'``."""
    return orjson.dumps(list(keys)).decode()


def describe_key(key: str) -> str:
    """A join key as a user wrote the value: ``'s:oslo'`` -> ``"'oslo'"``, ``'n:1'`` -> ``'1'``."""
    kind, _, text = key.partition(":")
    return repr(text) if kind == "s" else text
