"""DTL paths: ``"_S.orders.amount"`` strings and the ``path`` function's traversal.

Semantics (Sesam ``hub/dtl/paths.rst``, ``dtl-functions-dictionaries.rst``, ``namespaces.rst``):

* a path string is a variable (``_S``, ``_T``, ``_P``, ``_R``, ``_``), a dot, and elements
  separated by dots; ``"_S."`` (no elements) is the variable's value itself; an element in single
  quotes may contain dots, ``''`` inside quotes is one quote (``_S.foo.'john.doe''s'.bar``);
* each step looks the key up in a dict and maps over a list, flattening list values, skipping
  nulls and values that are not dicts: ``{"a": [{"b": 1}, {"b": [2, 3]}]}`` with ``a.b`` ->
  ``[1, 2, 3]``; a missing key of a single dict gives null;
* with namespaced identifiers on (:class:`Namespaces`), an unqualified element gives the union over
  every namespace (``a`` matches ``a``, ``foo:a``, ``bar:a``), ``::a`` exactly the key ``a`` and
  ``:a`` the key in the current property namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VARIABLES = ("_S", "_T", "_P", "_R", "_")

#: The :class:`~runtime.dtl.functions.Env` variable holding the :class:`Namespaces` (or absent).
NAMESPACES_VAR = "$namespaces"


@dataclass(frozen=True)
class Namespaces:
    """A pipe's namespaced-identifier settings (Sesam ``namespaced_identifiers``)."""

    identity: str | None
    property: str | None

    @classmethod
    def from_context(cls, context: dict[str, Any] | None) -> Namespaces | None:
        """From ``{"namespaced_identifiers": true, "namespaces": {"identity": ..., "property": ...}}``;
        None when namespaced identifiers are off or ``context`` is None."""
        if not context or not context.get("namespaced_identifiers"):
            return None
        names = context.get("namespaces") or {}
        return cls(names.get("identity"), names.get("property"))


def is_path(text: str) -> bool:
    """True if ``text`` is a path string (``_S``, ``_S.``, ``_S.a.b``, ``_.x`` ...)."""
    head, dot, _ = text.partition(".")
    return head in VARIABLES and (dot == "." or text == head)


def parse(text: str) -> tuple[str, list[str]]:
    """``"_S.foo.'a.b'"`` -> ``("_S", ["foo", "a.b"])``.

    Raises:
        ValueError: an unterminated quoted element, or text after a closing quote.
    """
    head, _, rest = text.partition(".")
    elements: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] == "'":
            buf, i = [], i + 1
            while True:
                if i >= len(rest):
                    raise ValueError(f"unterminated quoted element in path {text!r}")
                if rest[i] == "'":
                    if rest[i + 1:i + 2] == "'":
                        buf.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(rest[i])
                i += 1
            if i < len(rest) and rest[i] != ".":
                raise ValueError(f"text after a quoted element in path {text!r}")
            elements.append("".join(buf))
            i += 1
        else:
            end = rest.find(".", i)
            end = len(rest) if end < 0 else end
            elements.append(rest[i:end])
            i = end + 1
    return head, elements


def lookup(value: Any, key: str, namespaces: Namespaces | None = None) -> Any:
    """One step of a path from ``value``: a dict's key (null if missing), mapped over a list with
    list values flattened and nulls and non-dicts skipped."""
    if isinstance(value, dict):
        return _get(value, key, namespaces)
    if not isinstance(value, list):
        return None
    out: list[Any] = []
    for item in value:
        got = _get(item, key, namespaces) if isinstance(item, dict) else None
        if isinstance(got, list):
            out.extend(got)
        elif got is not None:
            out.append(got)
    return out


def traverse(value: Any, keys: list[str], namespaces: Namespaces | None = None) -> Any:
    """Follow ``keys`` from ``value`` (:func:`lookup` per key); ``[]`` gives ``value`` itself."""
    for key in keys:
        value = lookup(value, key, namespaces)
    return value


def _get(d: dict[str, Any], key: str, ns: Namespaces | None) -> Any:
    if ns is None or (":" in key and not key.startswith(":")):
        return d.get(key)
    if key.startswith("::"):
        return d.get(key[2:])
    if key.startswith(":"):
        return d.get(f"{ns.property}:{key[1:]}") if ns.property else d.get(key[1:])
    found: list[Any] = []
    for k, v in d.items():
        if k.rpartition(":")[2] == key:
            if isinstance(v, list):
                found.extend(v)
            elif v is not None:
                found.append(v)
    if not found:
        return None
    return found[0] if len(found) == 1 else found
