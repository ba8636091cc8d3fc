"""Dictionary functions (Sesam ``hub/dtl/dtl-functions-dictionaries.rst``).

VALUES arguments are coerced to lists; values that are not dicts are ignored. ``keys``,
``values`` and ``items`` always return lists.
"""

from __future__ import annotations

from typing import Any

from runtime.dtl.functions import Env, Expr, as_list, first, function


def dicts(values: Any) -> list[dict[str, Any]]:
    """The dicts of VALUES."""
    return [v for v in as_list(values) if isinstance(v, dict)]


@function("dict", min_args=0)
def dict_(*args: Any) -> dict[str, Any]:
    """``[dict]`` is ``{}``; ``[dict, PAIRS]`` makes a dict of the two-element lists
    ``[key, value]`` in PAIRS (others ignored; a dict is itself); ``[dict, K1, V1, K2, V2, ...]``
    pairs up its arguments. Non-string keys are ignored."""
    if len(args) == 1:
        if isinstance(args[0], dict):
            return args[0]
        pairs = [p for p in as_list(args[0]) if isinstance(p, list) and len(p) == 2]
    else:
        pairs = [[args[i], args[i + 1]] for i in range(0, len(args) - 1, 2)]
    return {k: v for k, v in pairs if isinstance(k, str)}


@function("has-key", min_args=2, max_args=2)
def has_key(key: Any, value: Any) -> bool | None:
    """True if the (first) value is a dict with KEY; null if it is not a dict."""
    head = first(value)
    return first(key) in head if isinstance(head, dict) else None


@function("keys", min_args=1, max_args=1)
def keys(values: Any) -> list[str]:
    return [k for d in dicts(values) for k in d]


@function("values", min_args=1, max_args=1)
def values_(values: Any) -> list[Any]:
    return [v for d in dicts(values) for v in d.values()]


@function("items", min_args=1, max_args=1)
def items(values: Any) -> list[list[Any]]:
    """``[key, value]`` for every pair of every dict."""
    return [[k, v] for d in dicts(values) for k, v in d.items()]


@function("key-values", min_args=1, max_args=1)
def key_values(values: Any) -> Any:
    """``{"key": k, "value": v}`` for every pair; one dict for a one-pair dict input."""
    out = [{"key": k, "value": v} for d in dicts(values) for k, v in d.items()]
    return out[0] if isinstance(values, dict) and len(out) == 1 else out


@function("map-values", min_args=2, max_args=2, lazy=True)
def map_values(env: Env, function_: Expr, values: Expr) -> list[Any]:
    """``[map-values, FUNCTION, VALUES]``: FUNCTION (``_`` bound) of every value of every dict."""
    return [function_(env.bind(v)) for d in dicts(values(env)) for v in d.values()]


@function("map-dict", min_args=3, max_args=3, lazy=True)
def map_dict(env: Env, key_function: Expr, value_function: Expr, values: Expr) -> Any:
    """``[map-dict, KEY_FUNCTION, VALUE_FUNCTION, VALUES]``: each dict with its keys and values
    mapped (``_`` bound); pairs whose new key is not a string are dropped, then empty dicts.
    One dict for a dict input."""
    evaluated = values(env)
    out = []
    for d in dicts(evaluated):
        mapped = [(key_function(env.bind(k)), value_function(env.bind(v))) for k, v in d.items()]
        kept = {k: v for k, v in mapped if isinstance(k, str)}
        if kept:
            out.append(kept)
    return out if isinstance(evaluated, list) else (out[0] if out else None)


@function("strip-ns", min_args=1, max_args=1)
def strip_ns(values: Any) -> Any:
    """Each dict with the namespace prefix removed from its keys (``ns1:b`` -> ``b``)."""
    out = [{k.split(":", 1)[-1]: v for k, v in d.items()} for d in dicts(values)]
    return out if isinstance(values, list) else (out[0] if out else None)
