"""Cast functions (Sesam ``dtl-functions-booleans.rst``, ``-numbers.rst``, ``-strings.rst``,
``-date-and-time.rst``, ``-uris.rst``, ``-namespaced-identifiers.rst``).

``[CAST, DEFAULT?, VALUES]`` translates every non-null value of VALUES; a value that does not
convert is dropped, or replaced by the DEFAULT expression evaluated with ``_`` bound to it. A list
input gives a list, a single input one value (null if dropped).
"""

from __future__ import annotations

import decimal
import math
import uuid
from collections.abc import Callable
from typing import Any

from dateutil import parser as dateparser

from runtime.dtl.functions import Env, Expr, first, function
from runtime.dtl.functions.json import plain, to_json
from runtime.dtl.values import NI, URI, Datetime


class _NoCast(Exception):
    """Raised by a converter for a value it does not translate."""


def _each(values: Any, convert: Callable[[Any], Any], default: Callable[[Any], Any] | None) -> Any:
    out = []
    for v in values if isinstance(values, list) else [values]:
        if v is None:
            continue
        try:
            out.append(convert(v))
        except (_NoCast, ValueError, ArithmeticError):
            if default is not None:
                out.append(default(v))
    return out if isinstance(values, list) else (out[0] if out else None)


def _cast(name: str, convert: Callable[[Any], Any]) -> None:
    @function(name, min_args=1, max_args=2, lazy=True)
    def cast(env: Env, *exprs: Expr) -> Any:
        default = (lambda v: exprs[0](env.bind(v))) if len(exprs) == 2 else None
        return _each(exprs[-1](env), convert, default)
    cast.__doc__ = f"``[{name}, DEFAULT?, VALUES]``: {convert.__doc__}"


def _eager(name: str, convert: Callable[[Any], Any]) -> None:
    @function(name, min_args=1, max_args=1)
    def cast(values: Any) -> Any:
        return _each(values, convert, None)
    cast.__doc__ = f"``[{name}, VALUES]``: {convert.__doc__}"


def _boolean(v: Any) -> bool:
    """booleans, and the strings ``true``/``false`` in any case."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise _NoCast


def _integer(v: Any) -> int:
    """integers; floats and decimals truncated; decimal strings and ``0x`` hex strings (two's
    complement: ``0xff`` is -1)."""
    if isinstance(v, bool):
        raise _NoCast
    if isinstance(v, int | float | decimal.Decimal):
        return int(v)
    if isinstance(v, str):
        if v.lower().startswith("0x"):
            return int.from_bytes(bytes.fromhex(v[2:]), "big", signed=True)
        return int(v)
    raise _NoCast


def _float(v: Any) -> float:
    """numbers and number strings as floats."""
    if isinstance(v, bool) or not isinstance(v, int | float | decimal.Decimal | str):
        raise _NoCast
    result = float(v)
    if not math.isfinite(result):
        raise _NoCast
    return result


def _decimal(v: Any) -> decimal.Decimal:
    """numbers and number strings as exact decimals (a float by its shortest repr)."""
    if isinstance(v, bool) or not isinstance(v, int | float | decimal.Decimal | str):
        raise _NoCast
    result = decimal.Decimal(v if isinstance(v, str | decimal.Decimal) else str(v))
    if not result.is_finite():
        raise _NoCast
    return result


def _datetime(v: Any) -> Datetime:
    """datetimes; integers as nanoseconds since the epoch; ISO 8601 strings (no offset = UTC)."""
    if isinstance(v, Datetime):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return Datetime(v)
    if not isinstance(v, str):
        raise _NoCast
    try:
        return Datetime.parse_transit(v)
    except ValueError:
        return Datetime.from_datetime(dateparser.isoparse(v))


def _string(v: Any) -> str:
    """strings; lists and dicts as JSON; other values as their text (``true``, ``124.4``,
    URIs/NIs/UUIDs without prefix, datetimes as ISO, bytes as UTF-8)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list | dict):
        return to_json(plain(v))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode()
    return str(v) if isinstance(v, decimal.Decimal) else str(plain(v))


def _bytes(v: Any) -> bytes:
    """bytes, and strings as UTF-8."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    raise _NoCast


def _uri(v: Any) -> URI:
    """URIs, and strings (not escaped)."""
    if isinstance(v, URI):
        return v
    if isinstance(v, str):
        return URI(v)
    raise _NoCast


def _uuid(v: Any) -> uuid.UUID:
    """UUIDs, and UUID strings."""
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        return uuid.UUID(v)
    raise _NoCast


_WITH_DEFAULT: dict[str, Callable[[Any], Any]] = {
    "boolean": _boolean, "integer": _integer, "float": _float, "decimal": _decimal,
    "datetime": _datetime,
}
_WITHOUT_DEFAULT: dict[str, Callable[[Any], Any]] = {"string": _string, "bytes": _bytes, "uri": _uri}
for _name, _convert in _WITH_DEFAULT.items():
    _cast(_name, _convert)
for _name, _convert in _WITHOUT_DEFAULT.items():
    _eager(_name, _convert)


@function("uuid", min_args=0, max_args=1)
def uuid_(*args: Any) -> Any:
    """``[uuid]`` is a new random UUID (version 4); ``[uuid, VALUES]`` casts UUIDs and UUID strings."""
    return _each(args[0], _uuid, None) if args else uuid.uuid4()


# Sesam's default URI prefix of the global ("_") namespace.
_DEFAULT_PREFIXES = {"http://example.org/": "_"}


@function("ni", min_args=1, max_args=2)
def ni(*args: Any) -> Any:
    """``[ni, NAMESPACE?, VALUES]``: strings as namespaced identifiers (``ns:value``, or global
    without NAMESPACE, no escaping); without NAMESPACE a URI under a known prefix becomes
    ``prefix_ns:rest`` (``http://example.org/`` is ``_``); other URIs are dropped."""
    namespace = first(args[0]) if len(args) == 2 else None

    def convert(v: Any) -> NI:
        if isinstance(v, NI) and namespace is None:
            return v
        if isinstance(v, str):
            return NI(f"{namespace}:{v}" if namespace is not None else v)
        if isinstance(v, URI) and namespace is None:
            for prefix, ns in _DEFAULT_PREFIXES.items():
                if v.value.startswith(prefix):
                    return NI(f"{ns}:{v.value[len(prefix):]}")
        raise _NoCast
    return _each(args[-1], convert, None)


def _ni_parts(v: Any) -> tuple[str, str]:
    if not isinstance(v, NI | str):
        raise _NoCast
    ns, sep, ident = str(v).partition(":")
    return (ns, ident) if sep else ("", ns)


@function("ni-id", min_args=1, max_args=1)
def ni_id(values: Any) -> Any:
    """The identifier part of each NI (or ``ns:id`` string): ``foo:bar`` -> ``bar``."""
    return _each(values, lambda v: _ni_parts(v)[1], None)


@function("ni-ns", min_args=1, max_args=1)
def ni_ns(values: Any) -> Any:
    """The namespace part of each NI (or string), ``""`` for none: ``foo:bar`` -> ``foo``."""
    return _each(values, lambda v: _ni_parts(v)[0], None)
