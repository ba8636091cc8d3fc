"""JSON functions (Sesam ``hub/dtl/dtl-functions-json.rst``): ``json``/``json-transit`` write a
value as JSON (sorted keys, ``", "`` and ``": "`` separators); ``json-parse`` reads JSON without
transit decoding, ``json-transit-parse`` with it.
"""

from __future__ import annotations

import base64
import decimal
import json
import uuid
from collections.abc import Callable
from typing import Any

from runtime.dtl.functions import Env, Expr, function
from runtime.dtl.values import NI, URI, Datetime, decode, encode


def to_json(value: Any) -> str:
    """``value`` (plain JSON) as JSON text with sorted keys and Python's default separators."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def plain(value: Any) -> Any:
    """DTL values -> plain JSON without transit tags: datetimes as ISO text, URIs, NIs and UUIDs
    as their text, bytes as base64, decimals as numbers (floats)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Datetime):
        return value.iso()
    if isinstance(value, URI | NI | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


@function("json", min_args=1, max_args=1)
def json_(value: Any) -> str:
    """VALUE (a list as one JSON array) as JSON text; extension types as plain text."""
    return to_json(plain(value))


@function("json-transit", min_args=1, max_args=1)
def json_transit(value: Any) -> str:
    """VALUE as transit JSON text (``~t``, ``~f``, ``~r``, ... strings)."""
    return to_json(encode(value))


_FAILED = object()


def _parser(name: str, post: Callable[[Any], Any]) -> None:
    @function(name, min_args=1, max_args=2, lazy=True)
    def parse(env: Env, *exprs: Expr) -> Any:
        """``[NAME, DEFAULT?, VALUES]``: each string of VALUES parsed; a string that is not JSON
        (or a non-string) is dropped, or replaced by DEFAULT evaluated with ``_`` bound to it;
        nulls are skipped. A list input gives a list."""
        values = exprs[-1](env)
        out = []
        for v in values if isinstance(values, list) else [values]:
            if v is None:
                continue
            result = _load(v, post)
            if result is _FAILED and len(exprs) == 2:
                result = exprs[0](env.bind(v))
            if result is not _FAILED:
                out.append(result)
        return out if isinstance(values, list) else (out[0] if out else None)


def _load(text: Any, post: Callable[[Any], Any]) -> Any:
    if not isinstance(text, str):
        return _FAILED
    try:
        return post(json.loads(text))
    except ValueError:
        return _FAILED


_parser("json-parse", lambda v: v)
_parser("json-transit-parse", decode)
