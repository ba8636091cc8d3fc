"""Type predicates (Sesam ``is-*`` functions): each looks at the first value of a list only
(``is-list`` looks at the value itself). ``bool`` is not an integer; ``1.0`` is a float, not a
decimal."""

from __future__ import annotations

import decimal
import uuid
from typing import Any

from runtime.dtl.functions import first, function
from runtime.dtl.values import NI, URI, Datetime


def _predicate(name: str, kinds: type | tuple[type, ...], exclude: type | None = None) -> None:
    @function(name, min_args=1, max_args=1)
    def predicate(value: Any) -> bool:
        head = first(value)
        return isinstance(head, kinds) and not (exclude is not None and isinstance(head, exclude))
    predicate.__doc__ = f"True if the (first) value is a {name[3:]}."


for _name, _kinds in (("is-boolean", bool), ("is-bytes", bytes), ("is-datetime", Datetime),
                      ("is-decimal", decimal.Decimal), ("is-dict", dict), ("is-float", float),
                      ("is-string", str), ("is-uri", URI), ("is-uuid", uuid.UUID), ("is-ni", NI)):
    _predicate(_name, _kinds)
_predicate("is-integer", int, exclude=bool)


@function("is-list", min_args=1, max_args=1)
def is_list(value: Any) -> bool:
    """True if the value is a list."""
    return isinstance(value, list)
