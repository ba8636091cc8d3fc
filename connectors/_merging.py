"""The merge source's pure part: which entities belong together, and the merged entity.

An entity takes part in the merge under its ``_id`` (its identity, the NI ``~:<_id>``): the same
``_id`` in two input datasets is one identity, so those entities always merge. An equality rule
``["eq", "a.x", "b.y"]`` joins every ``a`` entity whose ``x`` has a join key (DTL ``eq``, a list
by any member: :mod:`runtime.dtl.joinkeys`) with every ``b`` entity whose ``y`` has the same key;
merging is transitive, so a group is a connected component of those joins (Sesam's merge source).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runtime.dtl import paths, values
from runtime.dtl.joinkeys import join_keys
from runtime.entities import Entity

Identity = Literal["composite", "first"]


@dataclass(frozen=True)
class Side:
    """One side of an equality rule: the dataset (by its position in ``datasets``) and path."""

    dataset: int
    path: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """``["eq", left, right]``: entities whose values at the two sides share a join key merge."""

    left: Side
    right: Side


def keys_at(entity: Entity, path: Sequence[str]) -> list[str]:
    """The join keys of a stored (transit) entity's value at ``path`` (the hop index's keys;
    only the value found is decoded)."""
    value = entity.get(path[0]) if len(path) == 1 else paths.traverse(entity, list(path))
    if value.__class__ is str and value[:1] != "~":  # a plain string: the common case
        return [f"s:{value}"]
    return join_keys(values.decode(value))


def tokens(dataset: int, entity: Entity, rules: Sequence[Rule]) -> list[tuple[int, int, str]]:
    """``(rule, side, key)`` for each join key the entity has on each rule side it is on
    (side 0 left, 1 right)."""
    out: list[tuple[int, int, str]] = []
    for r, rule in enumerate(rules):
        for s, side in enumerate((rule.left, rule.right)):
            if side.dataset == dataset:
                out.extend((r, s, k) for k in keys_at(entity, side.path))
    return out


class Components:
    """Union-find over identities (``_id`` strings), fed entity by entity."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self._sides: dict[tuple[int, str], tuple[list[str], list[str]]] = {}

    def add(self, eid: str, entity_tokens: Iterable[tuple[int, int, str]]) -> None:
        """Note identity ``eid`` and the rule keys of one of its entities."""
        self.parent.setdefault(eid, eid)
        for r, s, key in entity_tokens:
            self._sides.setdefault((r, key), ([], []))[s].append(eid)

    def _find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def groups(self) -> list[list[str]]:
        """The connected components (each sorted), a rule key joining both its sides' ids."""
        for left, right in self._sides.values():
            if left and right:
                root = self._find(left[0])
                for eid in (*left, *right):
                    other = self._find(eid)
                    if other != root:
                        self.parent[other] = root
        out: dict[str, list[str]] = {}
        for eid in self.parent:
            out.setdefault(self._find(eid), []).append(eid)
        return [sorted(g) for g in out.values()]


def composite_id(ids: Sequence[str]) -> str:
    """The ids joined by ``|`` (``\\`` and ``|`` in an id escaped by ``\\``): one id alone is itself."""
    return "|".join(i.replace("\\", "\\\\").replace("|", "\\|") if "|" in i or "\\" in i else i for i in ids)


def merged(members: Sequence[tuple[int, Entity]], identity: Identity) -> Entity:
    """The merged entity of one component's live entities, given as ``(dataset position, entity)``
    sorted by dataset position, then ``_id``.

    ``_id``: ``first`` takes the first member's; ``composite`` joins the member identities in
    that order (:func:`composite_id`). ``$ids``: the members' identities as NIs (``~:<_id>``), in
    that order. Other properties: the members' non-``_`` properties (except ``$ids``); a property
    with different values in several members gets the list of its distinct values in member order.
    """
    ids = list(dict.fromkeys(e["_id"] for _, e in members))
    out: Entity = {"_id": ids[0] if identity == "first" else composite_id(ids), "$ids": [f"~:{i}" for i in ids]}
    multi: dict[str, list[Any]] = {}
    for _, entity in members:
        for key, value in entity.items():
            if key[0] == "_" or key == "$ids":
                continue
            if key not in out:
                out[key] = value
            elif out[key] != value:
                seen = multi.setdefault(key, [out[key]])
                if value not in seen:
                    seen.append(value)
    for key, seen in multi.items():
        out[key] = seen if len(seen) > 1 else seen[0]
    return out
