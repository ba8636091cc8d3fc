"""The registry of component types: built-ins and plugins through one mechanism.

Every package that provides components (Sluice's own ``connectors`` included) exposes an entry
point in the group ``sluice.components`` whose value is a callable ``register(registry)``. The
runtime knows no concrete connector: it only looks types up here.

Kinds are ``source``, ``transform``, ``sink`` and ``system``; a system's type name includes its
``system:`` prefix (``system:rest``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal

import structlog

from runtime.components import Component, Sink, Source, System, Transform
from runtime.errors import SluiceError

Kind = Literal["source", "transform", "sink", "system"]
KINDS: dict[Kind, type[Any]] = {
    "source": Source,
    "transform": Transform,
    "sink": Sink,
    "system": System,
}
ENTRY_POINT_GROUP = "sluice.components"

log = structlog.get_logger("sluice.plugins")


class Registry:
    """Component types by kind and type name. Clone it to register test-only types."""

    def __init__(self) -> None:
        self._types: dict[Kind, dict[str, type[Any]]] = {k: {} for k in KINDS}
        self.plugins: list[str] = []

    def register(self, kind: Kind, type_name: str, cls: type[Component] | type[System]) -> None:
        """Register ``cls`` as the ``type_name`` of ``kind``.

        Raises:
            SluiceError: the kind is unknown, ``cls`` is not a subclass of the kind's base class,
                or the name is taken by another class.
        """
        base = KINDS.get(kind)
        if base is None or not (isinstance(cls, type) and issubclass(cls, base)):
            raise SluiceError(f"cannot register {cls!r} as a {kind}: it must subclass {base}")
        if kind == "system" and not type_name.startswith("system:"):
            raise SluiceError(f"system type {type_name!r} must start with 'system:'")
        known = self._types[kind].get(type_name)
        if known is not None and known is not cls:
            raise SluiceError(f"{kind} type {type_name!r} is already registered by {known!r}")
        self._types[kind][type_name] = cls

    def get(self, kind: Kind, type_name: str) -> type[Any] | None:
        """The class registered for ``type_name``, or None."""
        return self._types[kind].get(type_name)

    def names(self, kind: Kind) -> list[str]:
        """Registered type names of a kind, sorted."""
        return sorted(self._types[kind])

    def clone(self) -> Registry:
        """An independent copy (for tests that add types)."""
        copy = Registry()
        for kind, types in self._types.items():
            copy._types[kind] = dict(types)
        copy.plugins = list(self.plugins)
        return copy

    def load_entry_points(self) -> None:
        """Call every ``sluice.components`` entry point's ``register(registry)``.

        Raises:
            SluiceError: a plugin failed to load or register (names the plugin).
        """
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                register: Callable[[Registry], None] = ep.load()
                register(self)
            except SluiceError:
                raise
            except Exception as exc:
                raise SluiceError(
                    f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}; fix or uninstall it"
                ) from exc
            self.plugins.append(ep.name)
            log.debug("plugin.loaded", plugin=ep.name, value=ep.value)


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry with every installed entry point loaded (built once)."""
    global _default
    if _default is None:
        registry = Registry()
        registry.load_entry_points()
        _default = registry
    return _default
