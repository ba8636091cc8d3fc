"""Checks for the constant-like arguments of library functions (widths, indexes, digits,
amounts): a bad one is an error naming the function and the argument, not a Python TypeError."""

from __future__ import annotations

from typing import Any

from runtime.dtl.functions import first
from runtime.errors import FatalError


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
