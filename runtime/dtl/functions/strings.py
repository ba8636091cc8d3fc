"""String functions (Sesam ``hub/dtl/dtl-functions-strings.rst``).

A VALUES argument is a value or a list; non-strings in it are ignored. Functions over one input
answer with one value, over a list with a list.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from typing import Any

from runtime.dtl.functions import as_list, first, function
from runtime.dtl.functions.args import int_arg, map_typed, str_arg


def map_strings(values: Any, op: Callable[[str], Any]) -> Any:
    """``op`` over the strings of VALUES: a list for a list input, else one value (null for a
    non-string)."""
    return map_typed(values, str, op)


def _strings(args: tuple[Any, ...]) -> list[str]:
    return [v for arg in args for v in as_list(arg) if isinstance(v, str)]


@function("concat", min_args=1)
def concat(*args: Any) -> str:
    """The strings of all arguments (list arguments flattened one level) joined; ``""`` if none."""
    return "".join(_strings(args))


@function("join", min_args=2, max_args=2)
def join(separator: Any, values: Any) -> str:
    """The strings of VALUES joined by SEPARATOR (a string)."""
    return str_arg("join", "SEPARATOR", separator).join(_strings((values,)))


@function("lower", min_args=1, max_args=1)
def lower(values: Any) -> Any:
    return map_strings(values, str.lower)


@function("upper", min_args=1, max_args=1)
def upper(values: Any) -> Any:
    return map_strings(values, str.upper)


@function("length", min_args=1, max_args=1)
def length(values: Any) -> Any:
    """Length of each string, bytes, dict or list in VALUES (characters, bytes or items)."""
    def size(value: Any) -> int | None:
        return len(value) if isinstance(value, str | bytes | dict | list) else None
    if isinstance(values, list):
        return [n for n in map(size, values) if n is not None]
    return size(values)


def _justify(name: str, method: Callable[[str, int, str], str]) -> None:
    @function(name, min_args=3, max_args=3)
    def justify(width: Any, fill: Any, values: Any) -> Any:
        size, char = int_arg(name, "WIDTH", width), str_arg(name, "FILL", fill)
        return map_strings(values, lambda s: method(s, size, char))


_justify("ljust", str.ljust)
_justify("rjust", str.rjust)


def _stripper(name: str, method: Callable[[str, str | None], str]) -> None:
    @function(name, min_args=1, max_args=2)
    def strip(*args: Any) -> Any:
        chars = str_arg(name, "CHARACTERS", args[0]) if len(args) == 2 else None
        return map_strings(args[-1], lambda s: method(s, chars))


_stripper("strip", str.strip)
_stripper("lstrip", str.lstrip)
_stripper("rstrip", str.rstrip)


@function("matches", min_args=2, max_args=2)
def matches(pattern: Any, values: Any) -> bool:
    """True if every value is a string matching the glob PATTERN (``*``, ``?``, ``[...]``);
    false for no values."""
    items = as_list(values)
    glob = str_arg("matches", "PATTERN", pattern)
    return bool(items) and all(isinstance(v, str) and fnmatch.fnmatchcase(v, glob) for v in items)


@function("replace", min_args=2, max_args=3)
def replace(*args: Any) -> Any:
    """``[replace, OLD, NEW, VALUES]`` replaces every OLD with NEW; ``[replace, MAPPING, VALUES]``
    replaces each key of the dict MAPPING with its value, in one pass (longest key first)."""
    if len(args) == 3:
        old, new = str_arg("replace", "OLD", args[0]), str_arg("replace", "NEW", args[1])
        return map_strings(args[2], lambda s: s.replace(old, new))
    mapping = {k: str(v) for k, v in (first(args[0]) or {}).items()}
    if not mapping:
        return map_strings(args[1], lambda s: s)
    pattern = _alternation(tuple(mapping))
    return map_strings(args[1], lambda s: pattern.sub(lambda m: mapping[m[0]], s))


@functools.lru_cache(maxsize=256)
def _alternation(keys: tuple[str, ...]) -> re.Pattern[str]:
    """A regex matching any of ``keys``, longest first (compiled once per key set)."""
    return re.compile("|".join(map(re.escape, sorted(keys, key=len, reverse=True))))


@function("split", min_args=2, max_args=2)
def split(separator: Any, values: Any) -> list[str]:
    """Every string of VALUES split at SEPARATOR (``""`` splits into characters), flattened."""
    sep = str_arg("split", "SEPARATOR", separator)
    return [part for s in _strings((values,)) for part in (list(s) if sep == "" else s.split(sep))]


@function("substring", min_args=2, max_args=3)
def substring(*args: Any) -> Any:
    """``[substring, START, END?, VALUES]``: Python slicing (negative indexes count from the end)."""
    start = int_arg("substring", "START", args[0])
    end = int_arg("substring", "END", args[1]) if len(args) == 3 else None
    return map_strings(args[-1], lambda s: s[start:end])
