"""DTL hops: joins from the source entity to entities of other datasets (Sesam
``hub/dtl/dtl-functions-hops.rst``, ``joins.rst``), answered from the state store's persistent
secondary indexes.

``["hops", SPEC, SPEC, ...]`` and ``["apply-hops", RULE, SPEC, ...]``, each SPEC
``{"datasets": ["DATASET ALIAS", ...], "where": EXPR | [EXPR, ...], "return"?: ALIAS | EXPR,
"recurse"?: bool, "max_depth"?: int | null (10), "exclude_root"?: bool,
"track-dependencies"?: bool (true), "trace"?: bool (false), "require-populated"?: bool (true)}``:

* an ``eq`` whose two sides each reference exactly one alias, different ones (``_S`` counts), is a
  **join**; every other expression is a **filter** over the joined aliases. Joins are planned at
  compile time outward from ``_S``; the side of the alias being joined to must be a path
  (``"a.customer_id"``): it names the index ``(dataset, path)``. An alias no join reaches from
  ``_S`` is a compile error;
* a join holds when the value sets overlap (a list joins by any member; :mod:`runtime.dtl.joinkeys`
  gives the typed keys, so ``1`` joins ``1.0`` but not ``"1"``); null values and deleted entities
  never join;
* the result is the last alias's entities (or ``return``: an alias name, or an expression over the
  aliases evaluated per joined combination), without duplicates, ordered by ``_id``;
* ``recurse: true`` feeds the result back in as ``_S`` up to ``max_depth`` levels (null:
  unbounded; an entity already reached is not followed again), the result being every level's
  entities plus the root unless ``exclude_root``; it cannot be combined with ``return``;
* several SPECs chain: the result of one is the input (``_S``, one entity at a time) of the next;
* ``apply-hops RULE SPEC...`` applies the named rule to each result (Sesam: instead of ``apply``
  over ``hops``, so that dependency tracking sees them).

**Why the evaluation is in rounds.** Compiled DTL closures are synchronous; the store is async.
:meth:`HopResolver.apply` evaluates a batch of entities against the resolver's cache of index
look-ups; a hop that needs keys the cache lacks records all of them (for every joined
combination of that step) and aborts that entity's evaluation with an internal signal. Then one
batched index query per (dataset, path) fetches every recorded key of the whole batch, and the
aborted entities are evaluated again. An entity needs at most one round per sequential join step,
so a batch costs a few batched queries whatever its size, each proportional to its matches
(never a scan). Evaluation is pure (a rule's output is rebuilt on each round), so re-running is
safe.

**Dependency tracking** (Sesam ``hub/features/dependency-tracking.rst``). A resolver built with
``record=True`` notes, per source entity, what its hops looked up: each join key asked of an
index and the ``_id`` of each entity found (:data:`runtime.store.protocol.Dependency`), except
for specs with ``"track-dependencies": false``. The ``dtl`` transform stores them
(:meth:`StateStore.record_dependencies`); the pipe puts a source entity through again when a
later change of a hopped-to dataset touches one (see :mod:`runtime.tracking`). Not built yet:
``subsets``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import structlog

from runtime.dtl import paths, values
from runtime.dtl.compiler import Compiler
from runtime.dtl.functions import Env, Expr, as_list, truthy
from runtime.dtl.joinkeys import join_keys, path_name
from runtime.errors import FatalError
from runtime.store.protocol import FOUND, Dependency, StateStore

if TYPE_CHECKING:
    from runtime.dtl.rules import RuleSet

#: The :class:`Env` variable holding the :class:`HopResolver` of an evaluation.
RESOLVER_VAR = "$hops"
DEFAULT_MAX_DEPTH = 10
_SPEC_KEYS = {"datasets", "where", "return", "recurse", "max_depth", "exclude_root", "track-dependencies", "trace",
              "require-populated"}
log = structlog.get_logger("sluice.dtl")

Index = tuple[str, tuple[str, ...]]  # (dataset, property path)


class _NeedLookups(Exception):  # a signal of this module, never seen outside it
    """An evaluation needs index look-ups the resolver has not fetched yet."""


@dataclass
class HopResolver:
    """Answers the hops of rule evaluations from a state store's secondary indexes.

    Args:
        store: the state store holding the hopped-to datasets.
        record: note each source entity's look-ups in :attr:`dependencies` (dependency tracking).
    """

    store: StateStore
    record: bool = False
    #: per source entity ``_id`` of the last :meth:`apply`, what its tracked hops looked up
    dependencies: dict[str, set[Dependency]] = field(default_factory=dict)
    _current: set[Dependency] | None = None
    _found: dict[Index, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # index -> key -> entities
    _wanted: dict[Index, set[str]] = field(default_factory=dict)
    _ready: set[Index] = field(default_factory=set)
    queries: int = 0  # batched index queries made (one per (dataset, path) per round)

    async def apply(self, rule_set: RuleSet, entities: Sequence[dict[str, Any]],
                    namespaces: paths.Namespaces | None = None) -> list[list[dict[str, Any]]]:
        """``rule_set.apply`` over each of ``entities`` (DTL values), hops answered in batched
        rounds (see the module docstring); one output list per entity, in order. Each call
        starts with an empty cache, so a resolver reused for the next batch sees the writes made
        in between.

        Raises:
            whatever :meth:`RuleSet.apply` raises for an entity; StoreError from the store.
        """
        self._found = {}
        self.dependencies = {}
        if rule_set.hop_prefetch:
            self._prefetch(rule_set.hop_prefetch, entities, namespaces)
            await self._fetch()
        out: list[list[dict[str, Any]]] = [[] for _ in entities]
        pending = list(range(len(entities)))
        while pending:  # each round in a worker thread: the event loop stays free (and sleep! too)
            pending = await anyio.to_thread.run_sync(self._round, rule_set, entities, pending, out, namespaces)
            await self._fetch()
        return out

    def _round(self, rule_set: RuleSet, entities: Sequence[dict[str, Any]], pending: list[int],
               out: list[list[dict[str, Any]]], namespaces: paths.Namespaces | None) -> list[int]:
        """Evaluate the ``pending`` entities into ``out``; returns those that need look-ups."""
        again = []
        for i in pending:
            if self.record:  # a repeated round asks the same again: a set
                self._current = self.dependencies.setdefault(str(entities[i].get("_id")), set())
            try:
                out[i] = rule_set.apply(entities[i], namespaces, hops=self)
            except _NeedLookups:
                again.append(i)
        self._current = None
        return again

    def lookup(self, index: Index, keys: list[str], *, track: bool = True) -> list[dict[str, Any]]:
        """The entities of ``index`` matching any of ``keys``, without duplicates, by ``_id``;
        the look-up is noted for dependency tracking when recording and ``track``.

        Raises:
            _NeedLookups: a key is not fetched yet (recorded for the next batched query).
        """
        fetched = self._found.get(index) or {}
        missing = [k for k in keys if k not in fetched]
        if missing:
            self._wanted.setdefault(index, set()).update(missing)
            raise _NeedLookups
        if len(keys) == 1:  # the common case: one key's entities are distinct and ordered already
            result = fetched[keys[0]]
        else:
            found = {e["_id"]: e for k in keys for e in fetched[k]}
            result = [found[i] for i in sorted(found)]
        noted = self._current if track else None
        if noted is not None:  # after the fetch check: a repeated round records nothing twice
            dataset, name = index[0], _path_name(index[1])
            for k in keys:
                noted.add((dataset, name, k))
            for e in result:
                noted.add((dataset, FOUND, e["_id"]))
        return list(result)

    def _prefetch(self, joins: list[tuple[Index, Expr]], entities: Sequence[dict[str, Any]],
                  namespaces: paths.Namespaces | None) -> None:
        """Ask, before the first round, the keys the first join of each hop of the ``default``
        rule computes from the source entity alone. A guess: where it is wrong (the join value
        needs ``_T``, or the hop runs inside an ``apply`` with another ``_S``) the rounds fetch
        what is missing, as without it; where it is right (almost always) no entity is evaluated
        twice. Look-ups are noted for dependency tracking only when an evaluation makes them."""
        for index, known in joins:
            wanted = self._wanted.setdefault(index, set())
            for entity in entities:
                try:
                    wanted.update(join_keys(known(Env({"_S": entity, paths.NAMESPACES_VAR: namespaces}))))
                except Exception:  # a guess only: the evaluation itself reports errors
                    continue

    async def _fetch(self) -> None:
        wanted, self._wanted = self._wanted, {}
        for index, keys in wanted.items():
            dataset, path = index
            if index not in self._ready and await self.store.ensure_index(dataset, path):
                self._ready.add(index)
            rows = await self.store.index_lookup(dataset, path, sorted(keys), parse=_parse) \
                if index in self._ready else {}
            self.queries += 1
            fetched = self._found.setdefault(index, {})
            for key in keys:
                fetched[key] = rows.get(key, [])


def _parse(body: bytes) -> dict[str, Any]:
    """A stored body as DTL values: transit strings decoded, where the body holds one (a
    transit string starts with ``~``; most bodies hold none, and the search is cheaper than the
    walk of :func:`values.decode`)."""
    entity = orjson.loads(body)
    return values.decode(entity) if b'"~' in body else entity


@functools.cache
def _path_name(path: tuple[str, ...]) -> str:
    """:func:`path_name`, once per index path (it is asked per source entity and join)."""
    return path_name(path)


@dataclass
class _Join:
    """Bind ``alias`` to the entities of ``index`` whose path value overlaps ``known``'s."""

    alias: str
    index: Index
    known: Expr


@dataclass
class _Spec:
    aliases: list[str]
    joins: list[_Join]
    filters: list[Expr]
    returns: str | Expr
    recurse: bool
    max_depth: int | None
    exclude_root: bool
    track: bool
    where: str = ""
    trace: bool = False
    require_populated: bool = True
    #: set when the spec is one join and no filter, returning the joined alias (``[]``) or a
    #: path below it (its keys): evaluated without binding an env per joined entity
    direct: list[str] | None = None


class _AliasCompiler(Compiler):
    """The pipe's compiler, with the aliases of one spec as path heads (``"a.x"``)."""

    def __init__(self, parent: Compiler, aliases: set[str]) -> None:
        self.__dict__.update(parent.__dict__)  # same functions, special forms and problem list
        self.aliases = aliases

    def expr(self, raw: Any, where: str) -> Expr:
        if isinstance(raw, str) and (alias := raw.partition(".")[0]) in self.aliases and "." in raw:
            try:
                _, keys = paths.parse(raw)
            except ValueError as exc:
                self.problem(where, str(exc))
                return lambda env: None
            return lambda env: paths.traverse(env.variables.get(alias), keys, env.variables.get(paths.NAMESPACES_VAR))
        if isinstance(raw, str) and raw in self.aliases:
            return lambda env: env.variables.get(raw)
        return super().expr(raw, where)


def _heads(raw: Any, aliases: set[str]) -> set[str]:
    """The aliases (``_S`` included) a raw expression references."""
    if isinstance(raw, str):
        head = raw.partition(".")[0]
        return {head} if head in aliases else set()
    if isinstance(raw, list):
        return set().union(*(_heads(x, aliases) for x in raw))
    return set()


def _compile_spec(compiler: Compiler, raw: Any, where: str) -> _Spec | None:
    if not isinstance(raw, dict):
        compiler.problem(where, f"a hops spec is a dict with 'datasets' and 'where', got {raw!r}")
        return None
    for key in sorted(set(raw) - _SPEC_KEYS):
        compiler.problem(f"{where}.{key}", f"unknown hops key (keys: {', '.join(sorted(_SPEC_KEYS))})")
    datasets: dict[str, str] = {}
    for i, item in enumerate(as_list(raw.get("datasets"))):
        parts = item.split() if isinstance(item, str) else []
        if len(parts) != 2 or parts[1] == "_S" or parts[1] in datasets:
            compiler.problem(f"{where}.datasets[{i}]", f"expected 'DATASET ALIAS' with a new alias, got {item!r}")
            continue
        datasets[parts[1]] = parts[0]
    if not datasets:
        compiler.problem(f"{where}.datasets", "a hops spec needs 'datasets': ['DATASET ALIAS', ...]")
        return None
    names = {"_S", *datasets}
    alias_compiler = _AliasCompiler(compiler, names)
    where_raw = raw.get("where")
    exprs = [where_raw] if isinstance(where_raw, list) and where_raw and isinstance(where_raw[0], str) \
        else as_list(where_raw)
    edges: list[tuple[int, Any, Any]] = []
    filters: list[Expr] = []
    for i, e in enumerate(exprs):
        pos = f"{where}.where[{i}]"
        if isinstance(e, list) and len(e) == 3 and e[0] == "eq":
            sides = [_heads(e[1], names), _heads(e[2], names)]
            if all(len(s) == 1 for s in sides) and sides[0] != sides[1]:
                edges.append((i, e[1], e[2]))
                continue
        filters.append(alias_compiler.expr(e, pos))
    joins = _plan(alias_compiler, datasets, edges, names, filters, where)
    recurse = raw.get("recurse") is True
    ret = raw.get("return")
    if recurse and ret is not None:
        compiler.problem(f"{where}.return", "'return' cannot be combined with 'recurse'")
    returns: str | Expr = list(datasets)[-1] if ret is None else ret if ret in datasets \
        else alias_compiler.expr(ret, f"{where}.return")
    depth = raw.get("max_depth", DEFAULT_MAX_DEPTH)
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        compiler.problem(f"{where}.max_depth", f"max_depth is a positive integer or null, got {depth!r}")
        depth = DEFAULT_MAX_DEPTH
    track = raw.get("track-dependencies", True)
    if not isinstance(track, bool):
        compiler.problem(f"{where}.track-dependencies", f"track-dependencies is true or false, got {track!r}")
        track = True
    flags = {}
    for key, default in (("trace", False), ("require-populated", True)):
        flags[key] = raw.get(key, default)
        if not isinstance(flags[key], bool):
            compiler.problem(f"{where}.{key}", f"{key} is true or false, got {flags[key]!r}")
            flags[key] = default
    spec = _Spec(list(datasets), joins, filters, returns, recurse, depth, raw.get("exclude_root") is True, track,
                 where, flags["trace"], flags["require-populated"])
    if len(joins) == 1 and not filters and not recurse:
        spec.direct = _direct_return(ret, joins[0].alias)
    return spec


def _direct_return(ret: Any, alias: str) -> list[str] | None:
    """The path keys below ``alias`` that a spec's ``return`` names (``[]`` for the alias itself
    or no ``return``); None for any other expression."""
    if ret is None or ret == alias:
        return []
    if isinstance(ret, str) and ret.startswith(f"{alias}."):
        try:
            return paths.parse(ret)[1]
        except ValueError:
            return None  # reported by the alias compiler
    return None


def _plan(compiler: _AliasCompiler, datasets: dict[str, str], edges: list[tuple[int, Any, Any]],
          names: set[str], filters: list[Expr], where: str) -> list[_Join]:
    """Order the joins outward from ``_S``; a join between two aliases bound already becomes an
    overlap filter."""
    bound, joins, left = {"_S"}, [], list(edges)
    while left:
        for n, (i, a, b) in enumerate(left):
            (ha,), (hb,) = _heads(a, names), _heads(b, names)
            if ha in bound and hb in bound:
                filters.append(_overlap(compiler.expr(a, f"{where}.where[{i}][1]"),
                                        compiler.expr(b, f"{where}.where[{i}][2]")))
            elif ha in bound or hb in bound:
                known, (target, side) = (a, (hb, b)) if ha in bound else (b, (ha, a))
                pos = f"{where}.where[{i}][{2 if ha in bound else 1}]"
                if not (isinstance(side, str) and side.startswith(f"{target}.")):
                    compiler.problem(pos, f"the {target!r} side of a join must be a path like '{target}.id'")
                    side = f"{target}._id"
                keys = tuple(paths.parse(side)[1])
                joins.append(_Join(target, (datasets[target], keys), compiler.expr(known, pos)))
                bound.add(target)
            else:
                continue
            del left[n]
            break
        else:
            break
    for alias in datasets:
        if alias not in bound:
            compiler.problem(f"{where}.where", f"alias {alias!r} is not joined to _S (add an 'eq' join)")
    return joins


def _overlap(a: Expr, b: Expr) -> Expr:
    return lambda env: bool(set(join_keys(a(env))) & set(join_keys(b(env))))


def _run_spec(spec: _Spec, resolver: HopResolver, env: Env, source: Any) -> list[Any]:
    result = _evaluate_spec(spec, resolver, env, source)
    if spec.trace:  # Sesam's hops "trace": what the hop joined, per source entity
        log.info("hops.trace", hop=spec.where, source=source.get("_id") if isinstance(source, dict) else source,
                 found=[r.get("_id") if isinstance(r, dict) else r for r in result])
    return result


def _evaluate_spec(spec: _Spec, resolver: HopResolver, env: Env, source: Any) -> list[Any]:
    if spec.direct is not None:  # one join, no filter: the look-up is the result
        join = spec.joins[0]
        joined = resolver.lookup(join.index, join_keys(join.known(env.bind(source, "_S"))), track=spec.track)
        if not spec.direct:
            return joined
        keys, ns = spec.direct, env.variables.get(paths.NAMESPACES_VAR)
        return [r for e in joined if (r := paths.traverse(e, keys, ns)) is not None]
    combos = [env.bind(source, "_S")]
    for join in spec.joins:
        grown: list[Env] = []
        missing = False
        for combo in combos:
            try:
                grown.extend(combo.bind(e, join.alias) for e in
                             resolver.lookup(join.index, join_keys(join.known(combo)), track=spec.track))
            except _NeedLookups:
                missing = True  # go on, to record every key this step needs
        if missing:
            raise _NeedLookups
        combos = grown
    combos = [c for c in combos if all(truthy(f(c)) for f in spec.filters)]
    if isinstance(spec.returns, str):
        alias = spec.returns
        found = {c.variables[alias]["_id"]: c.variables[alias] for c in combos}
        return [found[i] for i in sorted(found)]
    combos.sort(key=lambda c: tuple(str(c.variables[a].get("_id")) for a in spec.aliases))
    ret = spec.returns
    return [r for c in combos if (r := ret(c)) is not None]


def _run_recursive(spec: _Spec, resolver: HopResolver, env: Env, root: Any) -> list[Any]:
    seen = {root.get("_id")} if isinstance(root, dict) else set()
    result = [] if spec.exclude_root else [root]
    frontier, depth = [root], 0
    while frontier and (spec.max_depth is None or depth < spec.max_depth):
        reached = {e["_id"]: e for s in frontier for e in _run_spec(spec, resolver, env, s)
                   if e["_id"] not in seen}
        frontier = [reached[i] for i in sorted(reached)]
        seen.update(reached)
        result.extend(frontier)
        depth += 1
    return sorted(result, key=lambda e: str(e.get("_id")) if isinstance(e, dict) else "")


def _hops(specs: list[_Spec], env: Env, where: str) -> list[Any]:
    resolver = env.variables.get(RESOLVER_VAR)
    if not isinstance(resolver, HopResolver):
        raise FatalError(f"DTL {where}: hops need a state store; evaluate the rules through "
                         "HopResolver(store).apply(...)")
    inputs: list[Any] = [env.variables.get("_S")]
    for spec in specs:
        run = _run_recursive if spec.recurse else _run_spec
        out = [r for s in inputs for r in run(spec, resolver, env, s)]
        if all(isinstance(e, dict) and "_id" in e for e in out):  # entities: once each, by _id
            by_id = {e["_id"]: e for e in out}
            out = [by_id[i] for i in sorted(by_id, key=str)]
        inputs = out
    return inputs


def _compile_specs(compiler: Compiler, raw: list[Any], where: str, start: int) -> list[_Spec] | None:
    specs = [_compile_spec(compiler, r, f"{where}[{i}]") for i, r in enumerate(raw, start)]
    return None if any(s is None for s in specs) else [s for s in specs if s is not None]


def forms(rule_set: RuleSet) -> dict[str, Callable[[Compiler, list[Any], str], Expr]]:
    """The special forms ``hops`` and ``apply-hops`` of ``rule_set``'s compiler."""
    def compiled(compiler: Compiler, args: list[Any], where: str, start: int) -> Expr:
        specs = _compile_specs(compiler, args, where, start)
        if not specs:
            return lambda env: None
        rule_set.hop_indexes.update(j.index for s in specs for j in s.joins)
        rule_set.required_hops.update(j.index[0] for s in specs if s.require_populated for j in s.joins)
        if where.startswith(f"{rule_set.where}.default[") and specs[0].joins:
            rule_set.hop_prefetch.append((specs[0].joins[0].index, specs[0].joins[0].known))
        for i, s in enumerate(specs, start):
            for j in s.joins if s.track else []:
                rule_set.tracked_hops.setdefault(j.index, f"{where}[{i}]")
        return lambda env: _hops(specs, env, where)

    def hops_form(compiler: Compiler, args: list[Any], where: str) -> Expr:
        if not compiler.arity("hops", args, where, 1, None):
            return lambda env: None
        return compiled(compiler, args, where, 1)

    def apply_hops_form(compiler: Compiler, args: list[Any], where: str) -> Expr:
        if not compiler.arity("apply-hops", args, where, 2, None):
            return lambda env: None
        return rule_set.applier(args[0], compiled(compiler, args[1:], where, 2), compiler, where, "apply-hops")
    return {"hops": hops_form, "apply-hops": apply_hops_form}
