"""The registry of DTL expression functions and the semantics helpers they share.

An expression compiles (:mod:`runtime.dtl.compiler`) to a closure ``Expr = Callable[[Env], Any]``.
A function is registered with :func:`function`:

* eager (default): ``impl(*values)`` gets its arguments evaluated, as DTL values
  (:mod:`runtime.dtl.values`: ``None``, ``bool``, ``int``, ``float``, ``Decimal``, ``str``,
  ``list``, ``dict``, :class:`~runtime.dtl.values.Datetime`, ``bytes``, ``URI``, ``NI``, ``UUID``);
* lazy: ``impl(env, *exprs)`` gets the :class:`Env` and its arguments' closures, for functions
  that evaluate an argument conditionally or with ``_`` bound (``if``, ``case``, ``map``, a cast's
  default-value expression): ``expr(env.bind(value))``.

``min_args``/``max_args`` are checked at compile time (a call with the wrong arity is a compile
error naming its position). Semantics come from Sesam's DTL documentation; the helpers below
encode the rules it states (``shared/conformance/dtl/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Env:
    """Variables of an evaluation: ``_S`` (source entity), ``_T`` (target), ``_P`` (parent's
    source), ``_R`` (root source), ``_`` (the current value inside map/filter/defaults), and any
    others a caller binds."""

    variables: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, name: str = "_") -> Env:
        """This env with ``name`` (default ``_``) bound to ``value``."""
        return Env({**self.variables, name: value})


Expr = Callable[[Env], Any]


@dataclass(frozen=True)
class FunctionSpec:
    """A registered function: its implementation and arity."""

    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None
    lazy: bool


REGISTRY: dict[str, FunctionSpec] = {}


def function(name: str, *, min_args: int = 0, max_args: int | None = None,
             lazy: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``impl`` as DTL function ``name`` (decorator).

    Raises:
        ValueError: ``name`` is registered already.
    """
    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"DTL function {name!r} is registered twice")
        REGISTRY[name] = FunctionSpec(name, impl, min_args, max_args, lazy)
        return impl
    return register


def as_list(value: Any) -> list[Any]:
    """List coercion: null -> ``[]``, a list -> itself, anything else -> ``[value]``."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def first(value: Any) -> Any:
    """The first value of a list (null for an empty one), or the value itself."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def truthy(value: Any) -> bool:
    """DTL truthiness: ``false``, ``null`` and ``[]`` are false; every other value is true
    (``0``, ``""`` and ``{}`` too)."""
    return not (value is None or value is False or (isinstance(value, list) and not value))


def single_or_list(values: list[Any]) -> Any:
    """How a function over a list input answers: null for none, the value for one, else the list."""
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def load() -> dict[str, FunctionSpec]:
    """Import every module of this package (each registers its functions) and return the
    registry. Idempotent."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY
