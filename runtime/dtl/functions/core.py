"""DTL's core expression functions: boolean logic, comparisons, conditionals, nulls, ``list``,
``path``, ``map``, ``filter``, ``apply-ns``.

Semantics from Sesam's docs (``hub/dtl/dtl-functions-*.rst``; summarised in
``shared/conformance/dtl/README.md``): truthiness is :func:`truthy`; ``eq``/``neq`` coerce both
sides to lists and compare exactly; ``gt``/``gte``/``lt``/``lte`` compare the first values in
DTL's total order (:func:`order_key`); ``is-null`` is true for null, ``[]`` or a list whose first
element is null. ``literal`` and ``apply`` are special forms of the compiler and the rule set.
"""

from __future__ import annotations

import decimal
import uuid
from typing import Any

from runtime.dtl import paths
from runtime.dtl.functions import Env, Expr, as_list, first, function, truthy
from runtime.dtl.values import NI, URI, Datetime


def order_key(value: Any) -> tuple[Any, ...]:
    """DTL's total order over values (entity-data-model.rst): Null < Boolean < numbers <
    Datetime < UUID < NI < URI < String < Dict < List < Bytes; numbers by value across int, float
    and Decimal; dicts by their sorted key+value pairs; lists element by element. Equal keys mean
    DTL-equal values (``1 == 1.0``, ``true != 1``)."""
    kind = type(value)  # the common exact types first (bool is not int here)
    if kind is str:
        return (7, value)
    if kind is int:
        return (2, value)
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float | decimal.Decimal):
        return (2, value)
    if isinstance(value, Datetime):
        return (3, value.ns)
    if isinstance(value, uuid.UUID):
        return (4, value.int)
    if isinstance(value, NI):
        return (5, value.value)
    if isinstance(value, URI):
        return (6, value.value)
    if isinstance(value, str):
        return (7, value)
    if isinstance(value, dict):
        return (8, tuple(sorted((k, order_key(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (9, tuple(order_key(v) for v in value))
    if isinstance(value, bytes):
        return (10, value)
    return (11, repr(value))


def dtl_equal(a: Any, b: Any) -> bool:
    """``eq``: both sides coerced to lists, compared element by element (:func:`order_key`)."""
    kind = type(a)
    if kind is type(b) and (kind is str or kind is int or kind is bool):
        return bool(a == b)  # two scalars of one exact type: what the lists' keys would give
    return order_key(as_list(a)) == order_key(as_list(b))


def is_null(value: Any) -> bool:
    """``is-null``: null, ``[]``, or a list whose first element is null."""
    return value is None or (isinstance(value, list) and (not value or value[0] is None))


def first_not_null(values: Any) -> Any:
    """``["coalesce", VALUES]``: the first value of VALUES that is not null (null if none)."""
    return next((v for v in as_list(values) if v is not None), None)


def not_null(values: Any) -> list[Any]:
    """``["filter", VALUES]``: the values of VALUES that are not null."""
    return [v for v in as_list(values) if v is not None]


# --- boolean logic ----------------------------------------------------------------------------

@function("and", min_args=1, lazy=True)
def _and(env: Env, *exprs: Expr) -> bool:
    return all(truthy(e(env)) for e in exprs)


@function("or", min_args=1, lazy=True)
def _or(env: Env, *exprs: Expr) -> bool:
    return any(truthy(e(env)) for e in exprs)


@function("not", min_args=1, max_args=1)
def _not(value: Any) -> bool:
    return not truthy(value)


def _each_truthy(env: Env, exprs: tuple[Expr, ...]) -> list[bool]:
    """``[VALUES]`` -> truthiness of each value; ``[FUNCTION, VALUES]`` -> of FUNCTION with ``_``
    bound to each value."""
    if len(exprs) == 1:
        return [truthy(v) for v in as_list(exprs[0](env))]
    func, vals = exprs
    return [truthy(func(env.bind(v))) for v in as_list(vals(env))]


@function("all", min_args=1, max_args=2, lazy=True)
def _all(env: Env, *exprs: Expr) -> bool:
    return all(_each_truthy(env, exprs))


@function("any", min_args=1, max_args=2, lazy=True)
def _any(env: Env, *exprs: Expr) -> bool:
    return any(_each_truthy(env, exprs))


# --- comparisons ------------------------------------------------------------------------------

@function("eq", min_args=2)
def _eq(a: Any, *others: Any) -> bool:
    return all(dtl_equal(a, b) for b in others)


@function("neq", min_args=2, max_args=2)
def _neq(a: Any, b: Any) -> bool:
    return not dtl_equal(a, b)


@function("gt", min_args=2, max_args=2)
def _gt(a: Any, b: Any) -> bool:
    return order_key(first(a)) > order_key(first(b))


@function("gte", min_args=2, max_args=2)
def _gte(a: Any, b: Any) -> bool:
    return order_key(first(a)) >= order_key(first(b))


@function("lt", min_args=2, max_args=2)
def _lt(a: Any, b: Any) -> bool:
    return order_key(first(a)) < order_key(first(b))


@function("lte", min_args=2, max_args=2)
def _lte(a: Any, b: Any) -> bool:
    return order_key(first(a)) <= order_key(first(b))


@function("in", min_args=2, max_args=2)
def _in(value: Any, values: Any) -> bool:
    """``["in", VALUE, VALUES]``: every value of VALUE (list-coerced) is DTL-equal to one of
    VALUES; a null or empty VALUE is in nothing, ``[null]`` is a real value (lists.rst)."""
    wanted = as_list(value)
    have = {order_key(v) for v in as_list(values)}
    return bool(wanted) and all(order_key(w) in have for w in wanted)


# --- conditionals -----------------------------------------------------------------------------

@function("if", min_args=2, max_args=3, lazy=True)
def _if(env: Env, cond: Expr, then: Expr, otherwise: Expr | None = None) -> Any:
    if truthy(cond(env)):
        return then(env)
    return otherwise(env) if otherwise is not None else None


@function("case", min_args=2, lazy=True)
def _case(env: Env, *exprs: Expr) -> Any:
    """``["case", COND1, VALUE1, COND2, VALUE2, ..., DEFAULT?]``: the value of the first true
    condition, else DEFAULT (null without one)."""
    for i in range(0, len(exprs) - 1, 2):
        if truthy(exprs[i](env)):
            return exprs[i + 1](env)
    return exprs[-1](env) if len(exprs) % 2 else None


@function("case-eq", min_args=3, lazy=True)
def _case_eq(env: Env, value: Expr, *exprs: Expr) -> Any:
    """``["case-eq", VALUE, K1, V1, K2, V2, ..., DEFAULT?]``: the V of the first K ``eq`` VALUE,
    else DEFAULT (null without one)."""
    v = value(env)
    for i in range(0, len(exprs) - 1, 2):
        if dtl_equal(v, exprs[i](env)):
            return exprs[i + 1](env)
    return exprs[-1](env) if len(exprs) % 2 else None


# --- nulls ------------------------------------------------------------------------------------

@function("is-null", min_args=1, max_args=1)
def _is_null(value: Any) -> bool:
    return is_null(value)


@function("is-not-null", min_args=1, max_args=1)
def _is_not_null(value: Any) -> bool:
    return not is_null(value)


@function("if-null", min_args=2, max_args=2, lazy=True)
def _if_null(env: Env, value: Expr, default: Expr) -> Any:
    v = value(env)
    return default(env) if is_null(v) else v


@function("coalesce", min_args=1, max_args=2, lazy=True)
def _coalesce(env: Env, *exprs: Expr) -> Any:
    """``["coalesce", VALUES]``: the first non-null value; ``["coalesce", FUNCTION, VALUES]``:
    the first value for which FUNCTION (``_`` bound to it) is true; null if none."""
    if len(exprs) == 1:
        return first_not_null(exprs[0](env))
    func, vals = exprs
    return next((v for v in as_list(vals(env)) if truthy(func(env.bind(v)))), None)


@function("coalesce-args", min_args=1, lazy=True)
def _coalesce_args(env: Env, *exprs: Expr) -> Any:
    """The first argument whose value is not null (``[]`` counts as a value)."""
    for e in exprs:
        v = e(env)
        if v is not None:
            return v
    return None


# --- values -----------------------------------------------------------------------------------

@function("list")
def _list(*items: Any) -> list[Any]:
    return list(items)


@function("path", min_args=2, max_args=2, lazy=True)
def _path(env: Env, path: Expr, value: Expr) -> Any:
    """``["path", PATH, VALUE]``: PATH a key or a list of keys (non-strings ignored), followed
    from VALUE with :func:`paths.traverse` (flattening at each step)."""
    return path_of(path(env), value(env), env.variables.get(paths.NAMESPACES_VAR))


def path_of(path: Any, value: Any, namespaces: paths.Namespaces | None) -> Any:
    """``["path", PATH, VALUE]`` of the values PATH and VALUE."""
    return paths.traverse(value, [k for k in as_list(path) if isinstance(k, str)], namespaces)


@function("map", min_args=2, max_args=2, lazy=True)
def _map(env: Env, func: Expr, vals: Expr) -> list[Any]:
    return [func(env.bind(v)) for v in as_list(vals(env))]


@function("filter", min_args=1, max_args=2, lazy=True)
def _filter(env: Env, *exprs: Expr) -> list[Any]:
    """``["filter", FUNCTION, VALUES]``: the values for which FUNCTION is true;
    ``["filter", VALUES]``: the non-null values."""
    if len(exprs) == 1:
        return not_null(exprs[0](env))
    func, vals = exprs
    return [v for v in as_list(vals(env)) if truthy(func(env.bind(v)))]


@function("apply-ns", min_args=2, max_args=2)
def _apply_ns(options: Any, value: Any) -> Any:
    """``["apply-ns", NAMESPACE | OPTIONS, VALUES]`` (namespaces.rst): prefix each key of each
    dict with ``property_namespace:`` (keys with a namespace kept), ``_id``'s value with
    ``identity_namespace:``; OPTIONS ``skip_underscore``/``skip_dollar`` (default true) leave
    ``_``/``$`` keys alone, ``recursive`` (default false) goes into nested dicts. A string
    NAMESPACE is both namespaces with the defaults."""
    opts = {"property_namespace": options, "identity_namespace": options} \
        if isinstance(options, str) else dict(options or {})
    settings = (opts.get("property_namespace"), opts.get("identity_namespace"),
                opts.get("skip_underscore", True), opts.get("skip_dollar", True),
                opts.get("recursive", False))
    if isinstance(value, list):
        return [_namespaced(v, settings) for v in value]
    return _namespaced(value, settings)


def _namespaced(value: Any, settings: tuple[Any, ...]) -> Any:
    if not isinstance(value, dict):
        return value
    prop_ns, id_ns, skip_under, skip_dollar, recursive = settings
    out: dict[str, Any] = {}
    for key, v in value.items():
        skip = (key.startswith("_") and skip_under) or (key.startswith("$") and skip_dollar)
        if key == "_id" and id_ns and isinstance(v, str) and ":" not in v:
            v = f"{id_ns}:{v}"
        elif recursive and not skip:
            v = [_namespaced(x, settings) for x in v] if isinstance(v, list) \
                else _namespaced(v, settings)
        new_key = key if skip or ":" in key or not prop_ns else f"{prop_ns}:{key}"
        out[new_key] = v
    return out
