"""Argument helpers of the library functions: mapping over the values of one type in VALUES,
and checks for constant-like arguments (widths, indexes, digits, amounts): a bad one is an error
naming the function and the argument, not a Python TypeError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.dtl.functions import first
from runtime.errors import FatalError


def map_typed(values: Any, kind: type | tuple[type, ...], op: Callable[[Any], Any]) -> Any:
    """``op`` over the values of type ``kind`` in VALUES (bool is never an int); other values and
    ``None`` results are dropped. A list input gives a list, a single input one value or null."""
    if type(values) is kind:  # one value of exactly that type (never bool for int): the common case
        return op(values)

    def take(v: Any) -> Any:
        return None if isinstance(v, bool) or not isinstance(v, kind) else op(v)
    if isinstance(values, list):
        return [r for r in map(take, values) if r is not None]
    return take(values)


def int_arg(function: str, argument: str, value: Any) -> int:
    """The (first) value as an integer.

    Raises:
        FatalError: it is not an integer (bool is not).
    """
    head = first(value)
    if isinstance(head, bool) or not isinstance(head, int):
        raise FatalError(f"DTL function {function}: {argument} must be an integer, got {head!r}; "
                         "fix the expression")
    return head


def str_arg(function: str, argument: str, value: Any) -> str:
    """The (first) value as a string.

    Raises:
        FatalError: it is not a string.
    """
    head = first(value)
    if not isinstance(head, str):
        raise FatalError(f"DTL function {function}: {argument} must be a string, got {head!r}; "
                         "fix the expression")
    return head
