"""Math functions (Sesam ``hub/dtl/dtl-functions-math.rst``).

Numbers are ``int``, ``float`` and ``Decimal`` (``bool`` is not a number). Mixed-type arithmetic
is coerced to the most precise type: int+float is float, anything with a Decimal is Decimal.
The natural-order operators ``+ - * / % ^`` take the first value of each side and give null if
either side is null; the map-style ``plus minus multiply divide mod pow`` apply their first
argument to each value of the second. Division by zero and roots of negatives give null.
"""

from __future__ import annotations

import decimal
import math
import operator
from collections.abc import Callable
from typing import Any

from runtime.dtl.functions import first, function
from runtime.dtl.functions.args import int_arg

Number = int | float | decimal.Decimal


def is_number(value: Any) -> bool:
    """True for int, float and Decimal, false for bool and everything else."""
    return isinstance(value, Number) and not isinstance(value, bool)


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, decimal.Decimal) != isinstance(b, decimal.Decimal):
        return decimal.Decimal(str(a)), decimal.Decimal(str(b))
    return a, b


def _divide(a: Any, b: Any) -> Any:
    if b == 0:
        return None
    return a / b


def _safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            return None
        try:
            result = op(*_coerce(a, b))
        except (ZeroDivisionError, OverflowError, decimal.InvalidOperation):
            return None
        return None if isinstance(result, complex) else result
    return apply


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide,
    "%": operator.mod, "^": operator.pow,
}
_MAPPED = {"plus": "+", "minus": "-", "multiply": "*", "divide": "/", "mod": "%", "pow": "^"}


def _register_operator(symbol: str, op: Callable[[Any, Any], Any]) -> None:
    @function(symbol, min_args=2, max_args=2)
    def natural(left: Any, right: Any) -> Any:
        return op(first(left), first(right))


def _register_mapped(name: str, op: Callable[[Any, Any], Any]) -> None:
    @function(name, min_args=2, max_args=2)
    def mapped(operand: Any, values: Any) -> Any:
        by = first(operand)
        return map_numbers(values, lambda v: op(v, by)) if is_number(by) else None


def map_numbers(values: Any, op: Callable[[Any], Any]) -> Any:
    """``op`` over the numbers of VALUES: a list for a list input, else one value (null for a
    non-number)."""
    if isinstance(values, list):
        return [op(v) for v in values if is_number(v)]
    return op(values) if is_number(values) else None


for _symbol, _op in _OPS.items():
    _register_operator(_symbol, _safe(_op))
for _name, _symbol in _MAPPED.items():
    _register_mapped(_name, _safe(_OPS[_symbol]))


@function("abs", min_args=1, max_args=1)
def abs_(values: Any) -> Any:
    return map_numbers(values, abs)


def _rounder(name: str, rounding: str) -> None:
    @function(name, min_args=1, max_args=2)
    def round_(*args: Any) -> Any:
        """``[NAME, DIGITS?, VALUES]``: integers when DIGITS is 0 or absent, else the input's type."""
        digits = int_arg(name, "DIGITS", args[0]) if len(args) == 2 else 0
        return map_numbers(args[-1], lambda v: _round(v, digits, rounding))


def _round(value: Number, digits: int, rounding: str) -> Number:
    exact = decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-digits), rounding=rounding)
    if digits <= 0 or isinstance(value, int):
        return int(exact)
    return exact if isinstance(value, decimal.Decimal) else float(exact)


_rounder("ceil", decimal.ROUND_CEILING)
_rounder("floor", decimal.ROUND_FLOOR)
_rounder("round", decimal.ROUND_HALF_EVEN)


def _unary(name: str, op: Callable[[float], float]) -> None:
    @function(name, min_args=1, max_args=1)
    def unary(values: Any) -> Any:
        def safe(v: Any) -> float | None:
            try:
                return op(float(v))
            except (ValueError, OverflowError):
                return None
        return map_numbers(values, safe)


_unary("sin", math.sin)
_unary("cos", math.cos)
_unary("tan", math.tan)
_unary("sqrt", math.sqrt)


@function("sum", min_args=1, max_args=1)
def sum_(values: Any) -> Any:
    """The sum of the numbers of VALUES (0 for none), coerced like ``+``."""
    total: Any = 0
    add = _safe(operator.add)
    for v in (values if isinstance(values, list) else [values]):
        if is_number(v):
            total = add(total, v)
    return total
