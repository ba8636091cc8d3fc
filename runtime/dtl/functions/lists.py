"""List functions (Sesam ``hub/dtl/dtl-functions-lists.rst``).

VALUES arguments are coerced to lists (null -> ``[]``, a value -> ``[value]``). Functions with an
optional FUNCTION argument are lazy: FUNCTION is evaluated with ``_`` bound to each value.
Ordering is DTL's mixed-type order (:mod:`.ordering`).
"""

from __future__ import annotations

import itertools
from typing import Any

from runtime.dtl.functions import Env, Expr, as_list, first, function
from runtime.dtl.functions.args import int_arg
from runtime.dtl.functions.json import to_json
from runtime.dtl.functions.ordering import sort_key
from runtime.dtl.values import encode


@function("combine", min_args=1)
def combine(*args: Any) -> list[Any]:
    """All arguments' values in one list, list arguments flattened one level."""
    return [v for arg in args for v in as_list(arg)]


@function("count", min_args=1, max_args=1)
def count(values: Any) -> int:
    return len(as_list(values))


@function("first", min_args=1, max_args=1)
def first_(values: Any) -> Any:
    return first(values)


@function("last", min_args=1, max_args=1)
def last(values: Any) -> Any:
    items = as_list(values)
    return items[-1] if items else None


@function("nth", min_args=2, max_args=2)
def nth(index: Any, values: Any) -> Any:
    """The value at INDEX (0-based; negative counts from the end), null past the end."""
    items, i = as_list(values), first(index)
    return items[i] if isinstance(i, int) and -len(items) <= i < len(items) else None


@function("flatten", min_args=1, max_args=1)
def flatten(values: Any) -> list[Any]:
    """One level of nesting removed."""
    return [v for item in as_list(values) for v in as_list(item)]


@function("reversed", min_args=1, max_args=1)
def reversed_(values: Any) -> list[Any]:
    return as_list(values)[::-1]


@function("is-empty", min_args=1, max_args=1)
def is_empty(values: Any) -> bool:
    return not as_list(values)


@function("is-not-empty", min_args=1, max_args=1)
def is_not_empty(values: Any) -> bool:
    return bool(as_list(values))


@function("enumerate", min_args=1, max_args=2)
def enumerate_(*args: Any) -> Any:
    """``[enumerate, START?, VALUES]``: ``{"key": index, "value": v}`` per value; one dict for a
    non-list input."""
    start = int_arg("enumerate", "START", args[0]) if len(args) == 2 else 0
    pairs = [{"key": i, "value": v} for i, v in enumerate(as_list(args[-1]), start)]
    return pairs if isinstance(args[-1], list) else (pairs[0] if pairs else None)


@function("insert", min_args=3, max_args=3)
def insert(index: Any, values: Any, item: Any) -> list[Any]:
    """A copy of VALUES with OBJECT inserted at INDEX as one element (Python ``list.insert``)."""
    items = list(as_list(values))
    items.insert(int_arg("insert", "INDEX", index), item)
    return items


@function("range", min_args=1, max_args=3)
def range_(*args: Any) -> list[int]:
    """``[range, START?, STOP, STEP?]`` as Python's ``range``."""
    return list(range(*(int_arg("range", "START/STOP/STEP", a) for a in args)))


@function("slice", min_args=2, max_args=4)
def slice_(*args: Any) -> list[Any]:
    """``[slice, START, END?, STEP?, VALUES]`` as Python slicing."""
    bounds = [int_arg("slice", "START/END/STEP", a) for a in args[:-1]]
    return as_list(args[-1])[slice(*bounds)] if len(bounds) > 1 else as_list(args[-1])[bounds[0]:]


@function("tuples", min_args=0)
def tuples(*args: Any) -> list[list[Any]]:
    """The cartesian product of the arguments' values (nulls skipped); ``[]`` for no arguments."""
    if not args:
        return []
    return [list(t) for t in itertools.product(*([v for v in as_list(a) if v is not None] for a in args))]


def _keyed(env: Env, exprs: tuple[Expr, ...]) -> list[tuple[Any, Any]]:
    """(key, value) for each value of the last expression; the key is FUNCTION's result with
    ``_`` bound to the value when a FUNCTION is given, else the value itself."""
    values = as_list(exprs[-1](env))
    if len(exprs) == 1:
        return [(v, v) for v in values]
    return [(exprs[0](env.bind(v)), v) for v in values]


def sort_values(values: Any, reverse: bool = False) -> list[Any]:
    """``["sorted", VALUES]`` (``reverse``: ``sorted-descending``): VALUES in DTL order, stable."""
    items = as_list(values)
    kinds = {type(v) for v in items}
    if kinds == {str} or kinds == {int}:  # DTL order is Python's within these types
        return sorted(items, reverse=reverse)
    return sorted(items, key=sort_key, reverse=reverse)


def _ordered(name: str, reverse: bool) -> None:
    @function(name, min_args=1, max_args=2, lazy=True)
    def ordered(env: Env, *exprs: Expr) -> list[Any]:
        """``[NAME, FUNCTION?, VALUES]``: a stable sort by DTL order of FUNCTION's result."""
        if len(exprs) == 1:
            return sort_values(exprs[0](env), reverse)
        pairs = sorted(_keyed(env, exprs), key=lambda p: sort_key(p[0]), reverse=reverse)
        return [v for _, v in pairs]


_ordered("sorted", False)
_ordered("sorted-descending", True)


def _extreme(name: str, pick: Any) -> None:
    @function(name, min_args=1, max_args=2, lazy=True)
    def extreme(env: Env, *exprs: Expr) -> Any:
        """``[NAME, FUNCTION?, VALUES]``: the value whose FUNCTION result is least/greatest in DTL
        order (the first such), null for no values."""
        pairs = _keyed(env, exprs)
        return pick(pairs, key=lambda p: sort_key(p[0]))[1] if pairs else None


_extreme("min", min)
_extreme("max", max)


@function("distinct", min_args=1, max_args=2, lazy=True)
def distinct(env: Env, *exprs: Expr) -> list[Any]:
    """``[distinct, FUNCTION?, VALUES]``: the first value for each distinct key, in input order."""
    seen: dict[Any, Any] = {}
    for key, value in _keyed(env, exprs):
        seen.setdefault(sort_key(key), value)
    return list(seen.values())


def grouped(env: Env, key_expr: Expr, value_expr: Expr | None, values: Any) -> list[tuple[Any, list[Any]]]:
    """(key, values) per distinct KEY_FUNCTION result, in first-seen order; each value mapped
    through VALUE_FUNCTION (``_`` bound) when given."""
    groups: dict[Any, tuple[Any, list[Any]]] = {}
    for v in as_list(values):
        bound = env.bind(v)
        key = key_expr(bound)
        groups.setdefault(sort_key(key), (key, []))[1].append(value_expr(bound) if value_expr else v)
    return list(groups.values())


@function("group", min_args=2, max_args=3, lazy=True)
def group(env: Env, *exprs: Expr) -> list[list[Any]]:
    """``[group, KEY_FUNCTION, VALUE_FUNCTION?, VALUES]`` -> ``[[key, [values...]], ...]``."""
    value_expr = exprs[1] if len(exprs) == 3 else None
    return [[k, vs] for k, vs in grouped(env, exprs[0], value_expr, exprs[-1](env))]


@function("difference", min_args=2, max_args=2)
def difference(values1: Any, values2: Any) -> list[Any]:
    """The values of VALUES1 not in VALUES2 (order and duplicates kept)."""
    other = {sort_key(v) for v in as_list(values2)}
    return [v for v in as_list(values1) if sort_key(v) not in other]


@function("intersection", min_args=2, max_args=2)
def intersection(values1: Any, values2: Any) -> list[Any]:
    """The values of VALUES1 also in VALUES2 (order and duplicates kept)."""
    other = {sort_key(v) for v in as_list(values2)}
    return [v for v in as_list(values1) if sort_key(v) in other]


@function("intersects", min_args=2, max_args=2)
def intersects(values1: Any, values2: Any) -> bool:
    """True if VALUES1 and VALUES2 share a value."""
    return bool(intersection(values1, values2))


@function("union", min_args=2, max_args=2)
def union(values1: Any, values2: Any) -> list[Any]:
    """The distinct values of both, first occurrences in order."""
    seen: dict[Any, Any] = {}
    for v in as_list(values1) + as_list(values2):
        seen.setdefault(sort_key(v), v)
    return list(seen.values())


@function("group-by", min_args=2, max_args=3, lazy=True)
def group_by(env: Env, *exprs: Expr) -> dict[str, list[Any]]:
    """``[group-by, FUNCTION, STRING_FUNCTION?, VALUES]`` -> ``{key: [values...]}``: the dict key
    is STRING_FUNCTION's result for the group key (``_`` bound), else the key's transit JSON
    (``"A"`` -> ``"\\"A\\""``)."""
    groups = grouped(env, exprs[0], None, exprs[-1](env))
    if len(exprs) == 3:
        return {str(exprs[1](env.bind(k))): vs for k, vs in groups}
    return {to_json(encode(k)): vs for k, vs in groups}
