"""The ``merge`` source (Sesam's, ``version: 2``): entities of several datasets merged by
equality rules, transitively, into one entity per group (:mod:`connectors._merging`).

A full run reads every input dataset once, groups all identities in memory (ids and join keys
only) and emits the merged entities group by group; the dataset sink's deletion tracking removes
merged ids no longer produced. An incremental run reads what changed in each input after its
since and re-merges only the groups those changes touch: from the changed ids it follows the
equality rules through the inputs' hop indexes (:meth:`StateStore.index_lookup`) and the old
groups through the sink dataset's index on ``$ids``, until nothing new is reached (never a scan).
Merged ids that a re-merge no longer produces get a tombstone: ``_deleted`` with ``$replaced``
when their entities went on in other merged entities (an unmerge, or a changed ``composite``
id), ``_deleted`` alone when all of them were deleted (Sesam).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import orjson
import structlog
from pydantic import Field, PrivateAttr, model_validator

from connectors._merging import Components, Identity, Rule, Side, keys_at, merged, tokens
from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.entities import Entity
from runtime.errors import BadDataError, SourceEmptyError

log = structlog.get_logger("sluice.merge")

IDS_PATH = ("$ids",)
PAGE = 5000  # changed or read entities per store call


class MergeSourceConfig(SourceConfig):
    """``{"type": "merge", "datasets": ["crm c", "erp e"], "equality": [["eq", "c.email", "e.mail"]]}``.

    Attributes:
        version: the merge source's version; only Sesam's ``2`` exists here.
        datasets: the input datasets, each ``"DATASET ALIAS"`` (the alias defaults to the
            dataset's name); their order decides the order of ``$ids`` and of ``identity``.
        equality: equality rules ``["eq", "ALIAS.PATH", "ALIAS.PATH"]`` (``PATH`` a property
            path with ``.`` between levels): entities whose values there share a DTL-``eq`` key
            (a list by any member) merge, transitively. Entities with the same ``_id`` in
            several inputs always merge.
        identity: the merged ``_id``: ``composite`` joins the members' ``_id`` (in dataset
            order, then ``_id`` order) with ``|``; ``first`` takes the first of them (Sesam).
        max_merged: most entities one merged entity may have; a group past it fails the run,
            naming its first ids (Sesam's default, 50,000).
    """

    type: Literal["merge"]
    version: Literal[2] = 2
    datasets: list[str] = Field(min_length=1)
    equality: list[list[str]] = Field(default_factory=list)
    identity: Identity = "composite"
    max_merged: int = Field(default=50_000, ge=1)
    _names: list[str] = PrivateAttr(default_factory=list)
    _rules: list[Rule] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _parse(self) -> MergeSourceConfig:
        names, aliases = [], []
        for item in self.datasets:
            parts = item.split()
            if len(parts) not in (1, 2):
                raise ValueError(f"datasets: {item!r} is not 'DATASET' or 'DATASET ALIAS'")
            names.append(parts[0])
            aliases.append(parts[-1])
        for what, listed in (("dataset", names), ("alias", aliases)):
            twice = sorted({x for x in listed if listed.count(x) > 1})
            if twice:
                raise ValueError(f"datasets: {what} {twice[0]!r} is listed twice")
        rules = []
        for n, rule in enumerate(self.equality):
            if len(rule) != 3 or rule[0] != "eq":
                raise ValueError(f"equality[{n}]: {rule!r} is not ['eq', 'ALIAS.PATH', 'ALIAS.PATH']")
            sides = []
            for text in rule[1:]:
                alias, _, path = text.partition(".")
                if alias not in aliases or not path or "" in path.split("."):
                    raise ValueError(f"equality[{n}]: {text!r} is not ALIAS.PATH with an alias of "
                                     f"datasets ({', '.join(aliases)})")
                sides.append(Side(aliases.index(alias), tuple(path.split("."))))
            rules.append(Rule(sides[0], sides[1]))
        self._names, self._rules = names, rules
        return self

    @property
    def names(self) -> list[str]:
        """The input dataset names, in config order."""
        return self._names

    @property
    def rules(self) -> list[Rule]:
        """The parsed equality rules."""
        return self._rules


def encode_since(names: Sequence[str], offsets: dict[str, int | None]) -> str:
    """``"crm=000000000000042,erp=000000000000000"``: per input, one more than the last offset
    read (0: nothing). Fixed-width, in config order, so a later since is a larger string (the
    pipe keeps the largest ``_updated``)."""
    return ",".join(f"{n}={_plus_one(offsets.get(n)):015d}" for n in names)


def _plus_one(offset: int | None) -> int:
    return 0 if offset is None else offset + 1


def decode_since(since: Any) -> dict[str, int | None]:
    """The offsets of :func:`encode_since` (an input it does not name is read from the start).

    Raises:
        BadDataError: ``since`` is not such a string (e.g. set by hand).
    """
    if since is None:
        return {}
    out: dict[str, int | None] = {}
    try:
        for part in str(since).split(","):
            name, _, number = part.rpartition("=")
            out[name] = int(number) - 1 if int(number) > 0 else None
    except ValueError:
        raise BadDataError(f"since {since!r} is not a merge source since (DATASET=OFFSET,...); "
                           "reset the pipe", location="since") from None
    return out


def _member_order(member: tuple[int, Entity]) -> tuple[int, str]:
    return member[0], member[1]["_id"]


class MergeSource(Source):
    """Merges the entities of ``datasets`` by ``equality``; since is the offset read in each input."""

    Config: ClassVar[type[ComponentConfig]] = MergeSourceConfig
    supports_since = True
    is_since_comparable = True  # the since is stored at the end of a run: a re-run re-merges
    config: MergeSourceConfig

    @classmethod
    def datasets_read(cls, config: Any) -> list[str]:
        return list(config.names)

    async def open(self) -> None:
        self._ready: set[tuple[str, tuple[str, ...]]] = set()
        self._done: set[str] = set()  # identities re-merged in this run
        writes = self.context.writes
        self._sink = writes[0] if len(writes) == 1 else None
        self.fetched = 0  # entity versions fetched by id: the work an incremental run does
        for rule in self.config.rules:  # built now (or on the first run after the input exists)
            for side in (rule.left, rule.right):
                await self._ensure(self.config.names[side.dataset], side.path)
        if self._sink is not None:
            await self._ensure(self._sink, IDS_PATH)

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        """Merged entities (and tombstones, incremental runs) with ``_updated`` the since.

        Raises:
            BadDataError: a group has more than ``max_merged`` entities, or the since is not one.
        """
        names = self.config.names
        offsets = decode_since(since)
        if since is None:
            await self._check_inputs()
            async for chunk in self._full(offsets):
                yield chunk
            return
        for name in names:
            position = offsets.get(name)
            while True:
                items, end = await self.context.store.read(name, since=position, limit=PAGE)
                if end is not None and end != position:
                    offsets[name] = position = end
                if items:
                    chunk = await self._remerge([e["_id"] for e in items], encode_since(names, offsets))
                    if chunk:
                        yield chunk
                if end is None or not items:
                    break

    async def _check_inputs(self) -> None:
        """A full run over an input that does not exist or is not populated ends incomplete; one
        over a populated input without a live entity fails before reading.

        Raises:
            SourceEmptyError: an input dataset is populated but every entity of it is deleted.
        """
        for name in self.config.names:
            info = await self.context.store.dataset_info(name)
            if info is None or not info.populated:
                log.warning("source.input_not_populated", dataset=name, exists=info is not None,
                            reason="no deletion tracking until a run of its writer has completed")
                self.complete = False
            elif info.ids == info.deleted:
                what = "is empty" if info.ids == 0 else f"has no entity (all {info.ids} deleted)"
                raise SourceEmptyError(
                    f"input dataset {name!r} of the merge {what}: "
                    "a full run would unmerge every entity merged with one of it; nothing was "
                    "written. Check the pipe writing it; to merge without it, remove it from datasets",
                    pipe=self.context.pipe)

    async def _full(self, offsets: dict[str, int | None]) -> AsyncIterator[list[Entity]]:
        """Group every live entity of the inputs (their stored JSON held per input and id: one
        read of each input), then emit the merged entities, ``batch_size`` entities at a time."""
        groups = Components()
        rules = self.config.rules
        held: list[dict[str, bytes]] = [{} for _ in self.config.names]
        for i, name in enumerate(self.config.names):
            position = None
            while True:
                bodies, end = await self.context.store.read_bodies(name, since=position, limit=PAGE)
                for body in bodies:
                    e = orjson.loads(body)
                    if e.get("_deleted") is not True:
                        held[i][e["_id"]] = body
                        groups.add(e["_id"], tokens(i, e, rules))
                if end is None or end == position:
                    break
                offsets[name] = position = end
        stamp = encode_since(self.config.names, offsets)
        batch: list[list[str]] = []
        live: dict[str, list[tuple[int, Entity]]] = {}
        for group in groups.groups():
            batch.append(group)
            for eid in group:
                live[eid] = [(i, orjson.loads(h[eid])) for i, h in enumerate(held) if eid in h]
            if len(live) >= self.context.run.batch_size:
                yield await self._merged(batch, live, stamp)
                batch, live = [], {}
        if batch:
            yield await self._merged(batch, live, stamp)

    async def _live(self, wanted: list[str]) -> dict[str, list[tuple[int, Entity]]]:
        """The live (not deleted) latest versions of ``wanted`` ids in every input, per id."""
        live: dict[str, list[tuple[int, Entity]]] = {}
        for i, name in enumerate(self.config.names):
            for start in range(0, len(wanted), PAGE):
                found = await self.context.store.latest_versions(name, wanted[start:start + PAGE])
                self.fetched += len(found)
                for e in found:
                    if e.get("_deleted") is not True:
                        live.setdefault(e["_id"], []).append((i, e))
        return live

    async def _merged(self, groups: list[list[str]], live: dict[str, list[tuple[int, Entity]]],
                      stamp: str) -> list[Entity]:
        out = []
        for group in groups:
            members = [m for eid in group for m in live.get(eid, ())]
            if len(members) > 1:
                members.sort(key=_member_order)
            if len(members) > self.config.max_merged:
                raise BadDataError(
                    f"{len(members)} entities merge into one, more than max_merged "
                    f"{self.config.max_merged} (the first: {', '.join(group[:3])}); check the equality "
                    "rules for a value many entities share", location=f"merge of {group[0]!r}",
                    pipe=self.context.pipe)
            if members:
                entity = merged(members, self.config.identity)
                entity["_updated"] = stamp
                out.append(entity)
        return out

    async def _remerge(self, seeds: list[str], stamp: str) -> list[Entity]:
        """Re-merge the groups of ``seeds`` (changed ids): the region they reach through the
        rules and their old merged entities, grouped anew; tombstones for old merged ids gone."""
        region: set[str] = set()
        live: dict[str, list[tuple[int, Entity]]] = {}
        old: dict[str, list[str]] = {}
        frontier = set(seeds) - self._done
        while frontier:
            region |= frontier
            found = await self._live(sorted(frontier))
            live.update(found)
            reached = await self._joined(found)
            for entity in await self._old(frontier):
                members = [x[2:] for x in entity.get("$ids", []) if isinstance(x, str) and x.startswith("~:")]
                old[entity["_id"]] = members
                reached.update(members)
            frontier = reached - region
        self._done |= region
        groups = Components()
        for eid, entities in live.items():
            for i, e in entities:
                groups.add(eid, tokens(i, e, self.config.rules))
        out = await self._merged(groups.groups(), live, stamp)
        produced = {e["_id"] for e in out}
        for old_id, members in sorted(old.items()):
            if old_id not in produced:
                replaced = {"$replaced": True} if any(m in live for m in members) else {}
                out.append({"_id": old_id, "_deleted": True, **replaced, "_updated": stamp})
        return out

    async def _joined(self, found: dict[str, list[tuple[int, Entity]]]) -> set[str]:
        """The ids the equality rules join to the entities ``found`` (hop index look-ups)."""
        wanted: dict[tuple[int, tuple[str, ...]], set[str]] = {}
        for entities in found.values():
            for i, e in entities:
                for rule in self.config.rules:
                    for mine, other in ((rule.left, rule.right), (rule.right, rule.left)):
                        if mine.dataset == i:
                            wanted.setdefault((other.dataset, other.path), set()).update(keys_at(e, mine.path))
        reached: set[str] = set()
        for (i, path), keys in wanted.items():
            for entities_found in (await self._lookup(self.config.names[i], path, keys)).values():
                reached.update(e["_id"] for e in entities_found)
        return reached

    async def _old(self, ids: set[str]) -> list[Entity]:
        """The committed merged entities (of the sink dataset) that have one of ``ids``."""
        if self._sink is None:
            return []
        found = await self._lookup(self._sink, IDS_PATH, {f"~:{i}" for i in ids})
        return list({e["_id"]: e for es in found.values() for e in es}.values())

    async def _lookup(self, dataset: str, path: tuple[str, ...], keys: set[str]) -> dict[str, list[Entity]]:
        if not keys:
            return {}
        if not await self._ensure(dataset, path):
            return {}  # the dataset did not exist yet: nothing to find
        return await self.context.store.index_lookup(dataset, path, sorted(keys))

    async def _ensure(self, dataset: str, path: tuple[str, ...]) -> bool:
        """Whether ``dataset`` has its hop index on ``path`` (built if the dataset exists)."""
        if (dataset, path) not in self._ready and await self.context.store.ensure_index(dataset, path):
            self._ready.add((dataset, path))
        return (dataset, path) in self._ready
