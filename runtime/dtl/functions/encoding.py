"""Encoding functions (Sesam ``dtl-functions-strings.rst``, ``-bytes.rst``, ``-math.rst``):
base64, hex, URL quoting and hashing. Values of the wrong type are ignored; a list input gives a
list, a single input one value (null if ignored)."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Callable
from typing import Any

import mmh3

from runtime.dtl.functions import first, function
from runtime.dtl.functions.args import map_typed, str_arg
from runtime.entities import state_hash
from runtime.errors import FatalError


@function("base64-encode", min_args=1, max_args=1)
def base64_encode(values: Any) -> Any:
    """Bytes as standard base64 text."""
    return map_typed(values, bytes, lambda b: base64.b64encode(b).decode())


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


@function("base64-decode", min_args=1, max_args=1)
def base64_decode(values: Any) -> Any:
    """Base64 strings as bytes; strings that are not base64 are dropped."""
    return map_typed(values, str, _b64decode)


def _hex(n: int) -> str:
    size = ((n if n >= 0 else ~n).bit_length() + 8) // 8
    return "0x" + n.to_bytes(size, "big", signed=True).hex()


@function("hex", min_args=1, max_args=1)
def hex_(values: Any) -> Any:
    """Integers as ``0x`` hex of their two's complement in whole bytes: 1 -> ``0x01``,
    255 -> ``0x00ff``, -1 -> ``0xff`` (the inverse of ``integer`` on ``0x`` strings)."""
    return map_typed(values, int, _hex)


@function("url-quote", min_args=1, max_args=2)
def url_quote(*args: Any) -> Any:
    """``[url-quote, SAFE_CHARS?, VALUES]``: strings percent-encoded as UTF-8; SAFE_CHARS
    (default ``""``) are left as they are."""
    safe = str_arg("url-quote", "SAFE_CHARS", args[0]) if len(args) == 2 else ""
    return map_typed(args[-1], str, lambda s: urllib.parse.quote(s, safe=safe))


@function("url-unquote", min_args=1, max_args=1)
def url_unquote(values: Any) -> Any:
    return map_typed(values, str, urllib.parse.unquote)


_HASHES: dict[str, Callable[[bytes], int]] = {
    "murmur3": lambda data: mmh3.hash128(data, 0, signed=False),
}


@function("hash128", min_args=2, max_args=2)
def hash128(algorithm: Any, values: Any) -> Any:
    """``[hash128, "murmur3", VALUES]``: the unsigned 128-bit MurmurHash3 (x64, seed 0) of each
    string (as UTF-8) or bytes value, as an integer. A dict (an entity, ``"_S."``) is hashed over
    its fields not starting with ``_`` or ``$``, as canonical JSON
    (:func:`runtime.entities.state_hash`): the value the ``rest`` sink's optimistic locking
    compares, for users who write the comparison themselves (Sesam's optimistic locking pattern).

    Raises:
        FatalError: ALGORITHM is not ``murmur3``.
    """
    name = first(algorithm)
    if name not in _HASHES:
        raise FatalError(f"DTL function hash128: unknown algorithm {name!r}; use one of {sorted(_HASHES)}")
    digest = _HASHES[name]

    def one(v: Any) -> int:
        return state_hash(v) if isinstance(v, dict) else digest(v.encode() if isinstance(v, str) else v)
    return map_typed(values, (str, bytes, dict), one)
