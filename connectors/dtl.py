"""The ``dtl`` transform (Sesam's ``{"type": "dtl", "rules": {...}}``): a DTL rule set applied to
each entity of each batch.

The rules are compiled when the config is loaded (a compile error is a config problem that
``sluice check`` reports with the pipe and the key path, e.g.
``transform.rules.default[3][2]: unknown function 'concatt'``) and again, once, when the component
is built for a run. Per source entity the ``default`` rule gives (:meth:`RuleSet.apply`):

* its target, which must have an ``_id`` (Sesam ``id_required``: the target starts empty);
  ``filter`` makes it a deletion (Sesam's ``_filtered``: the output carries ``_deleted: true``, so
  a dataset sink writes it as deleted); ``discard`` drops it;
* the entities ``create`` made, after it;
* its ``$children`` (``create-child``), tracked (Sesam ``track_children``): a child the previous
  version of the parent in the pipe's sink dataset had and this one has not comes back as
  ``{"_id": ..., "_deleted": true}``. With ``emit_children: true`` (Sesam's ``emit_children``
  transform, here a key of this one) the children are emitted as entities of their own, each with
  ``$parent`` (the parent's ``_id``), and the parent keeps only their ids in ``$children``: the
  record of them the next run diffs against, written in the same transaction as the children.

``fail!`` fails the run (:class:`DtlFailError`), ``trip!`` stops the pipe (:class:`DtlTripError`),
both naming the entity.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import anyio
from pydantic import ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from runtime.components import ComponentConfig, ComponentContext, Transform
from runtime.dtl.hops import HopResolver
from runtime.dtl.rules import RuleSet
from runtime.entities import Entity
from runtime.errors import DtlCompileError, EntityError
from runtime.store.protocol import Dependency


class DtlTransformConfig(ComponentConfig):
    """``{"type": "dtl", "rules": {"default": [...], NAME: [...]}, "emit_children": false}``.

    Attributes:
        rules: the rule set (Sesam DTL); ``default`` is applied to each entity.
        emit_children: emit the ``create-child`` children as entities of their own (each with
            ``$parent``), the parent keeping only their ids in ``$children``.
    """

    type: Literal["dtl"]
    rules: dict[str, Any]
    emit_children: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        """Every compile error as a problem at its key path (``rules.default[3][2]``), and
        ``emit_children`` without a ``create-child`` in the rules (it would emit nothing)."""
        problems: list[tuple[str, str]] = []
        try:
            RuleSet(self.rules, where="rules")
        except DtlCompileError as exc:
            problems = [(p.key, p.reason) for p in exc.problems]
        if self.emit_children and not _uses(self.rules, "create-child"):
            problems.append(("emit_children", "the rules have no 'create-child': nothing to emit"))
        if problems:
            raise ValidationError.from_exception_data("dtl", [
                InitErrorDetails(type=PydanticCustomError("dtl_compile", "{reason}",
                                                          {"reason": reason}),
                                 loc=(key,), input=self.rules)
                for key, reason in problems])
        return self


class DtlTransform(Transform):
    """Applies the compiled rule set to each entity (Sesam ``dtl`` transform)."""

    Config: ClassVar[type[ComponentConfig]] = DtlTransformConfig
    config: DtlTransformConfig

    @classmethod
    def datasets_read(cls, config: Any) -> list[str]:
        """The datasets its hops join to (so their writers run first)."""
        rules = _joins_of(config.rules)
        return [] if rules is None else sorted({dataset for dataset, _ in rules.hop_indexes})

    @classmethod
    def datasets_required(cls, config: Any) -> list[str]:
        """The datasets of its hops, but those of hops with ``"require-populated": false``."""
        rules = _joins_of(config.rules)
        return [] if rules is None else sorted(rules.required_hops)

    @classmethod
    def datasets_tracked(cls, config: Any) -> dict[str, str]:
        """The datasets of the hops with dependency tracking (all but ``"track-dependencies":
        false``), each with its first hop spec's position (``rules.default[2][1]``)."""
        rules = _joins_of(config.rules)
        tracked: dict[str, str] = {}
        for (dataset, _), where in sorted(rules.tracked_hops.items() if rules else [], key=lambda x: x[1]):
            tracked.setdefault(dataset, where)
        return dict(sorted(tracked.items()))

    def __init__(self, config: DtlTransformConfig, context: ComponentContext) -> None:
        super().__init__(config, context)
        self.rules = RuleSet(config.rules, where="rules", pipe=context.pipe)  # compiled once per run
        self.tracks = context.tracks_dependencies and bool(self.rules.tracked_hops)
        self.hops = HopResolver(context.store, record=self.tracks) if self.rules.hop_indexes else None
        self.tracks_children = _uses(config.rules, "create-child")
        writes = context.writes
        self.dataset = writes[0] if len(writes) == 1 else None
        self.children: dict[str, list[str]] = {}  # this run's parents: ids not committed yet

    async def transform(self, entities: list[Entity]) -> list[Entity]:
        """The outputs of each entity, in order.

        Raises:
            EntityError: an output without ``_id``, or a child without a string ``_id``.
            DtlFailError, DtlTripError: a ``fail!``/``trip!`` ran.
        """
        if self.hops is not None:  # hops: batched index look-ups between synchronous rounds
            results = self._checked(entities, await self.hops.apply(self.rules, entities))
        else:
            results = await anyio.to_thread.run_sync(self._apply_all, entities)
        if not self.tracks_children:
            return [out for produced in results for out in produced]
        out: list[Entity] = []
        for entity, produced in zip(entities, results, strict=True):
            if produced:
                await self._track(entity, produced)
            out.extend(produced)
        return out

    def take_dependencies(self) -> dict[str, set[Dependency]] | None:
        """See :meth:`Transform.take_dependencies`: the last batch's, when tracking."""
        return self.hops.dependencies if self.tracks and self.hops is not None else None

    def _apply_all(self, entities: list[Entity]) -> list[list[Entity]]:
        return self._checked(entities, self.rules.apply_batch(entities))

    def _checked(self, entities: list[Entity], results: list[list[Entity]]) -> list[list[Entity]]:
        """``results`` (the outputs of each of ``entities``), each filtered target made a
        deletion.

        Raises:
            EntityError: an output has no ``_id`` (naming its source entity).
        """
        for entity, produced in zip(entities, results, strict=True):
            for out in produced:
                if "_id" not in out:
                    raise EntityError(f"DTL output of entity {entity.get('_id')!r} has no '_id' "
                                      "(copy or add it in the rule)",
                                      entity_id=entity.get("_id"), pipe=self.context.pipe)
            if produced and produced[0].pop("_filtered", False):
                produced[0]["_deleted"] = True
        return results

    async def _track(self, entity: Entity, produced: list[Entity]) -> None:
        """Add tombstones for removed children; with ``emit_children`` move them out."""
        parent = produced[0]
        pid = parent["_id"]
        children = [] if parent.get("_deleted") else _children(parent, entity, self.context.pipe)
        ids = [c["_id"] for c in children]
        gone = [{"_id": i, "_deleted": True} for i in await self._previous(pid) if i not in ids]
        self.children[pid] = ids
        if not self.config.emit_children:
            parent["$children"] = [*children, *gone]
            return
        parent["$children"] = ids
        produced[1:1] = [{**c, "$parent": pid} for c in [*children, *gone]]

    async def _previous(self, pid: str) -> list[str]:
        """Ids of the live children of the last version of ``pid`` (this run's, else the sink
        dataset's)."""
        if pid in self.children:
            return self.children[pid]
        if self.dataset is None:
            return []
        latest = await self.context.store.get(self.dataset, pid)
        old = latest[-1].get("$children") if latest else None
        ids = [c if isinstance(c, str) else c.get("_id") for c in old or []
               if isinstance(c, str) or (isinstance(c, dict) and not c.get("_deleted"))]
        return [i for i in ids if isinstance(i, str)]


def _children(parent: Entity, entity: Entity, pipe: str) -> list[dict[str, Any]]:
    children = parent.get("$children") or []
    for child in children:
        if not isinstance(child.get("_id"), str):
            raise EntityError(f"DTL create-child of entity {entity.get('_id')!r} made a child "
                              "without a string '_id'",
                              entity_id=entity.get("_id"), pipe=pipe)
    return list(children)


_JOINS: dict[str, RuleSet | None] = {}  # repr of the rules -> compiled (repr tells types apart)


def _joins_of(rules: Any) -> RuleSet | None:
    """The rule set compiled for what its hops join (hop indexes, tracked and required
    datasets), once per distinct rules (the pipe planner asks per run); None when it does not
    compile (the config's own validation reports that)."""
    key = repr(rules)
    if key not in _JOINS:
        if len(_JOINS) >= 256:
            _JOINS.clear()
        try:
            _JOINS[key] = RuleSet(rules, where="rules")
        except DtlCompileError:
            _JOINS[key] = None
    return _JOINS[key]


def _uses(raw: Any, name: str) -> bool:
    """Whether the DTL ``raw`` contains a transform ``[name, ...]`` anywhere."""
    if isinstance(raw, list):
        return (bool(raw) and raw[0] == name) or any(_uses(x, name) for x in raw)
    if isinstance(raw, dict):
        return any(_uses(x, name) for x in raw.values())
    return False
