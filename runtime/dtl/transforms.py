"""DTL transforms generated as Python statements: each rule becomes one generated function
(:mod:`runtime.dtl.codegen`), its transforms inlined in order, so that a rule run is straight-line
Python over locals, with no per-transform call and no per-entity ``Env`` (one is made only when
the rule uses an expression the generator leaves to a closure: ``apply``, ``hops``, lazy functions
binding ``_``).

A rule's function is ``(S, P, R, emitted, ns, hops) -> (T, status)``: ``S`` the source, ``P`` the
caller's context and ``R`` the root's (null for the ``default`` rule run on an entity: the root
context is then its own), ``emitted`` the list ``create`` extends, ``ns`` the namespaces of paths,
``hops`` the :class:`~runtime.dtl.hops.HopResolver`; ``T`` the target built and ``status``
:data:`DONE`, :data:`FILTERED` or :data:`DISCARDED` (``filter``/``discard`` return at once).

The semantics of each transform are Sesam's (``hub/dtl/transforms.rst``), as documented in
:mod:`runtime.dtl.rules`; the helpers below are the parts too long to inline, called from the
generated code.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from runtime.dtl import paths
from runtime.dtl.codegen import Code, Gen, Scope, function, prologue
from runtime.dtl.functions import as_list, first
from runtime.dtl.functions.core import dtl_equal, order_key
from runtime.dtl.hops import RESOLVER_VAR
from runtime.dtl.inline import equal
from runtime.dtl.values import NI
from runtime.errors import DtlFailError, DtlTripError, EntityError

DONE, FILTERED, DISCARDED = 0, 1, 2
#: Transforms nested deeper than this (``if`` in ``if`` ...) are a compile problem: Python's
#: parser limits the indentation of the generated code.
MAX_NESTING = 40

#: The locals a rule function computes when its code uses them: ``(name, line, names it uses)``.
RULE_PROLOGUE: list[tuple[str, str, tuple[str, ...]]] = [
    ("R", "C = {'_S': S, '_T': T, '_P': P}; C['_R'] = R = C if R is None else R", ()),
    ("env", f"env = _Env({{'_S': S, '_T': T, '_P': P, '_R': R, '$emitted': emitted, "
            f"{paths.NAMESPACES_VAR!r}: ns, {RESOLVER_VAR!r}: hops}})", ("R",)),
    ("NF", "NF = ns is None", ()),
    ("SD", "SD = isinstance(S, dict)", ()),
    ("SF", "SF = NF and SD", ("NF", "SD")),
    ("TF", "TF = NF", ("NF",)),
]
RULE_SCOPE = Scope({"_S": "S", "_T": "T", "_P": "P", "_R": "R"}, {"_S": "SF", "_T": "TF"})
#: The scope of a batch of dict entities without namespaces: a path step of ``_S`` or ``_T`` is
#: ``.get`` (the other branch, ``if True``, compiled away).
BATCH_SCOPE = replace(RULE_SCOPE, fast={"_S": "True", "_T": "True"})

Lines = list[str]


def _indent(lines: Lines) -> Lines:
    return [f"    {line}" for line in lines] or ["    pass"]


class RuleGen:
    """Generates the functions of a rule set's rules into ``gen``'s unit.

    Args:
        gen: the expression generator (its compiler records the problems).
        pipe: the pipe ``_id`` named in runtime errors.
    """

    def __init__(self, gen: Gen, pipe: str | None) -> None:
        self.gen = gen
        self.pipe = pipe
        self._nesting = 0
        self._exit: dict[int, Lines] = {}  # the statements leaving the rule, by status
        self._scope = RULE_SCOPE
        unit = gen.unit
        for helper in (key, matcher, copy_matching, merge, create, children, fail, make_ni, sleep):
            unit.names[f"_{helper.__name__}"] = helper
        unit.names["_pipe"] = pipe

    def rule(self, name: str, body: Any, where: str) -> str:
        """The source of ``def name(S, P, R, emitted, ns, hops)`` running the transforms of
        ``body`` (at position ``where``)."""
        self.gen.begin()
        self._scope = RULE_SCOPE
        self._exit = {status: [f"return T, {status}"] for status in (FILTERED, DISCARDED)}
        lines = [*self.block(body, where), f"return T, {DONE}"]
        first_lines = ["T = {}", *prologue(RULE_PROLOGUE, self.gen.needs)]
        return function(name, "S, P, R, emitted, ns, hops", lines, first_lines)

    def batch(self, name: str, body: Any, where: str, general: str) -> str:
        """The source of ``def name(entities, ns, hops)``: the outputs of ``body`` (a rule run on
        each entity as :meth:`RuleSet.apply` runs the ``default`` rule), one list per entity.
        For dict entities without namespaces (a pipe's) the rule's code is the body of one loop,
        paths are ``.get``: no call per entity; else each entity is given to ``general``
        (``(entity, ns, hops) -> outputs``)."""
        self.gen.begin()
        self._scope = BATCH_SCOPE
        done = "append([T, *emitted] if emitted else [T])"
        self._exit = {FILTERED: ["T['_filtered'] = True", done, "continue"],
                      DISCARDED: ["append([])", "continue"]}
        lines = self.block(body, where)
        needs = self.gen.needs
        known = {"NF": "NF = True", "SD": "SD = True"}  # what the test below makes sure of
        wanted = prologue(RULE_PROLOGUE, needs)
        each = ["T = {}", *(line for line in wanted if line.split(" =")[0] not in known)]
        if "emitted" in needs or "env" in needs:  # create, or a closure's apply
            each.insert(1, "emitted = []")
        else:
            each.insert(1, "emitted = None")
        if {"P", "R", "env"} & needs:
            each.insert(1, "P = R = None")  # the root context: its own
        return function(name, "entities, ns, hops", [
            "if ns is not None or not all(isinstance(S, dict) for S in entities):",
            f"    return [{general}(S, ns, hops) for S in entities]",
            *(known[n] for n in known if any(line.startswith(f"{n} =") for line in wanted)),
            "out = []", "append = out.append",
            "for S in entities:", *_indent([*each, *lines, done]), "return out"], [])

    def block(self, body: Any, where: str) -> Lines:
        """A list of transforms (a rule body, or THEN of ``if``/``case``)."""
        if not isinstance(body, list):
            self.gen.compiler.problem(where, f"a rule is a list of transforms, got {body!r}")
            return []
        return [line for i, raw in enumerate(body) for line in self.transform(raw, f"{where}[{i}]")]

    def branch(self, raw: Any, where: str) -> Lines:
        """THEN/ELSE of ``if``/``case``: one transform, or a list of transforms (``[]``: none),
        indented for the body of a Python ``if``."""
        if self._nesting >= MAX_NESTING:
            self.gen.compiler.problem(where, f"transforms nested deeper than {MAX_NESTING} levels")
            return _indent([])
        self._nesting += 1
        try:
            if isinstance(raw, list) and (not raw or isinstance(raw[0], list)):
                return _indent(self.block(raw, where))
            return _indent(self.transform(raw, where))
        finally:
            self._nesting -= 1

    def transform(self, raw: Any, where: str) -> Lines:
        """The statements of one transform (none for a bad one, its problem recorded)."""
        c = self.gen.compiler
        if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
            c.problem(where, f"a transform is a list starting with its name, got {raw!r}")
            return []
        name, args = raw[0], raw[1:]
        build = _TRANSFORMS.get(name)
        if build is None:
            close = fnmatch.filter(list(_TRANSFORMS), name[:2] + "*")
            hint = f" (transforms: {', '.join(sorted(close))})" if close else ""
            c.problem(where, f"unknown transform {name!r}{hint}")
            return []
        lo, hi = _ARITY[name]
        if not c.arity(name, args, where, lo, hi):
            return []
        return build(self, args, where)

    # --- pieces ------------------------------------------------------------------------------

    def expr(self, raw: Any, where: str, scope: Scope | None = None) -> Code:
        return self.gen.expr(raw, where, scope or self._scope)

    def temp(self) -> str:
        return self.gen.unit.temp()

    def key(self, raw: Any, where: str) -> str:
        """A property name: a literal string, or an expression checked to give one."""
        if isinstance(raw, str):
            return repr(raw)
        self.gen.needs.add("S")
        return f"_key({self.expr(raw, where).src}, {where!r}, S, _pipe)"

    def patterns(self, raw: Any, where: str) -> str:
        """Property patterns of ``copy``/``remove`` as a matcher ``(name) -> bool``: compiled
        now for literal strings (never paths), else made from the expression's strings."""
        if isinstance(raw, str):
            return self.gen.unit.name(matcher([raw]), "_m")
        return f"_matcher({self.expr(raw, where).src})"

    # --- transforms --------------------------------------------------------------------------

    def add(self, args: list[Any], where: str, *, only_new: bool = False) -> Lines:
        k, value = self.key(args[0], f"{where}[1]"), self.expr(args[1], f"{where}[2]")
        if only_new:
            t = self.temp()
            return [f"{t} = {k}", f"if {t} not in T:", f"    T[{t}] = {value.src}"]
        if isinstance(args[0], str):
            return [f"T[{k}] = {value.src}"]
        t = self.temp()  # the name first, as Sesam's order of evaluation
        return [f"{t} = {k}", f"T[{t}] = {value.src}"]

    def add_if(self, args: list[Any], where: str) -> Lines:
        k = self.key(args[0], f"{where}[1]")
        v = self.temp()
        cond = self.expr(args[1], f"{where}[2]", self._scope.bind(v)) if len(args) == 3 else None
        value = self.expr(args[-1], f"{where}[{len(args)}]")
        test = f"{v} is not None" if cond is None else self.gen.truth(cond)
        return [f"{v} = {value.src}", f"if {test}:", f"    T[{k}] = {v}"]

    def copy(self, args: list[Any], where: str, *, remove: bool = False) -> Lines:
        src = "T" if remove else "S"
        if len(args) == 1 and isinstance(args[0], str) and not any(c in args[0] for c in "*?["):
            k = repr(args[0])
            if remove:
                return [f"T.pop({k}, None)"]
            self.gen.needs.add("SD")
            return [f"if SD and {k} in S:", f"    T[{k}] = S[{k}]"]
        if args == ["*"] and not remove:
            self.gen.needs.add("SD")
            return ["if SD:", "    T.update(S)"]
        include = self.patterns(args[0], f"{where}[1]")
        exclude = self.patterns(args[1], f"{where}[2]") if len(args) > 1 else "None"
        self.gen.needs.add(src)
        return [f"_copy_matching({src}, T, {include}, {exclude}, {remove})"]

    def rename(self, args: list[Any], where: str) -> Lines:
        old, new = self.key(args[0], f"{where}[1]"), self.key(args[1], f"{where}[2]")
        self.gen.needs.add("SD")
        if isinstance(args[0], str):
            return [f"if SD and {old} in S:", f"    T[{new}] = S[{old}]"]
        o = self.temp()
        return [f"{o} = {old}", f"if SD and {o} in S:", f"    T[{new}] = S[{o}]"]

    def merge(self, args: list[Any], where: str, *, union: bool = False) -> Lines:
        return [f"_merge(T, {self.expr(args[0], f'{where}[1]').src}, {union})"]

    def stop(self, args: list[Any], where: str, *, discard: bool) -> Lines:
        status = DISCARDED if discard else FILTERED
        if not args:
            return self._exit[status]
        cond = self.expr(args[0], f"{where}[1]")
        return [f"if not {self.gen.truth(cond)}:", *_indent(self._exit[status])]

    def if_(self, args: list[Any], where: str) -> Lines:
        cond = self.expr(args[0], f"{where}[1]")
        lines = [f"if {self.gen.truth(cond)}:", *self.branch(args[1], f"{where}[2]")]
        if len(args) > 2:
            lines += ["else:", *self.branch(args[2], f"{where}[3]")]
        return lines

    def case(self, args: list[Any], where: str, *, eq: bool = False) -> Lines:
        """``case``/``case-eq`` as flat ``if`` statements guarded by a not-matched-yet flag (an
        ``elif`` chain would nest as deep as the pairs are many)."""
        lines = []
        value = None
        if eq:
            v = self.temp()
            value = Code(v, simple=True)
            lines.append(f"{v} = {self.expr(args[0], f'{where}[1]').src}")
        rest, start = (args[1:], 2) if eq else (args, 1)
        todo = self.temp()
        lines.append(f"{todo} = True")
        for i in range(0, len(rest) - 1, 2):
            test = self.expr(rest[i], f"{where}[{start + i}]")
            cond = equal(self.gen, value, test) if value is not None else self.gen.truth(test)
            lines += [f"if {todo} and {cond}:", f"    {todo} = False",
                      *self.branch(rest[i + 1], f"{where}[{start + i + 1}]")]
        if len(rest) % 2:
            lines += [f"if {todo}:", *self.branch(rest[-1], f"{where}[{start + len(rest) - 1}]")]
        return lines

    def create(self, args: list[Any], where: str, *, child: bool = False) -> Lines:
        value = self.expr(args[0], f"{where}[1]").src
        if child:
            return [f"_children(T, {value})"]
        self.gen.needs.add("emitted")
        return [f"_create({value}, emitted, {where!r}, S, _pipe)"]

    def raise_(self, args: list[Any], where: str, *, trip: bool) -> Lines:
        message = self.expr(args[0], f"{where}[1]").src
        return [f"_fail({trip}, {message}, S, _pipe)"]

    def sleep(self, args: list[Any], where: str) -> Lines:
        seconds = self.expr(args[0], f"{where}[1]").src
        return [f"_sleep({seconds}, {where!r}, S, _pipe)"]

    def make_ni(self, args: list[Any], where: str) -> Lines:
        if not all(isinstance(a, str) for a in args):
            self.gen.compiler.problem(where, "'make-ni' takes strings: NAMESPACE PROPERTY [TARGET]")
            return []
        target = args[2] if len(args) > 2 else f"{args[1]}-ni"
        return [f"_make_ni(S, T, {args[0]!r}, {args[1]!r}, {target!r})"]


# --- helpers called by generated code -----------------------------------------------------------

def key(value: Any, where: str, source: Any, pipe: str | None) -> str:
    """A computed property name: the first value of ``value``.

    Raises:
        EntityError: it is not a string (the message names the transform's position).
    """
    k = first(value)
    if not isinstance(k, str):
        raise EntityError(f"DTL {where}: property name {k!r} is not a string",
                          entity_id=_id(source), pipe=pipe)
    return k


def matcher(patterns: Any) -> Callable[[str], bool]:
    """``(name) -> bool``: ``name`` matches one of the string ``patterns`` (fnmatch wildcards,
    case-sensitive; values that are not strings ignored)."""
    translated = [fnmatch.translate(p) for p in as_list(patterns) if isinstance(p, str)]
    if not translated:
        return lambda name: False
    match = re.compile("|".join(f"(?:{t})" for t in translated)).match
    return lambda name: match(name) is not None


def copy_matching(src: Any, target: dict[str, Any], include: Callable[[str], bool],
                  exclude: Callable[[str], bool] | None, remove: bool) -> None:
    """``copy`` (``src`` the source) or ``remove`` (``src`` the target) of the properties
    ``include`` matches and ``exclude`` does not."""
    if not isinstance(src, dict):
        return
    names = [k for k in src if include(k) and not (exclude is not None and exclude(k))]
    for k in names:
        if remove:
            del target[k]
        else:
            target[k] = src[k]


def merge(target: dict[str, Any], values: Any, union: bool) -> None:
    """``merge``/``merge-union`` of each dict of ``values`` into ``target``, ``_`` keys skipped;
    ``union`` adds to a property's values those it lacks (DTL equality)."""
    for d in as_list(values):
        if not isinstance(d, dict):
            continue
        for k, v in d.items():
            if k.startswith("_"):
                continue
            if union and k in target:
                have = as_list(target[k])
                have = have + [x for x in as_list(v) if not any(dtl_equal(x, h) for h in have)]
                target[k] = have[0] if len(have) == 1 else have
            else:
                target[k] = v


def create(values: Any, emitted: list[dict[str, Any]], where: str, source: Any,
           pipe: str | None) -> None:
    """``create``: a copy of each dict of ``values`` appended to ``emitted``.

    Raises:
        EntityError: one has no ``_id`` (nothing is appended).
    """
    made = [dict(d) for d in as_list(values) if isinstance(d, dict)]
    if any("_id" not in d for d in made):
        raise EntityError(f"DTL {where}: 'create' made an entity without '_id'",
                          entity_id=_id(source), pipe=pipe)
    emitted.extend(made)


def children(target: dict[str, Any], values: Any) -> None:
    """``create-child``: a copy of each dict of ``values`` added to ``target["$children"]``."""
    made = [dict(d) for d in as_list(values) if isinstance(d, dict)]
    target["$children"] = [*as_list(target.get("$children")), *made]


def fail(trip: bool, message: Any, source: Any, pipe: str | None) -> None:
    """``fail!``/``trip!``.

    Raises:
        DtlTripError (``trip``) or DtlFailError: always, with the message's first value.
    """
    error = DtlTripError if trip else DtlFailError
    raise error(str(first(message)), entity_id=_id(source), pipe=pipe)


def sleep(seconds: Any, where: str, source: Any, pipe: str | None) -> None:
    """``sleep!``: pause the evaluation ``seconds`` (Sesam; e.g. to pace a side effect); null
    does not pause. Rules run in a worker thread, so the pipe's other actors go on meanwhile.

    Raises:
        EntityError: ``seconds`` is not a number >= 0.
    """
    value = first(seconds)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or value < 0:
        raise EntityError(f"DTL {where}: sleep! takes a number of seconds >= 0, got {value!r}",
                          entity_id=_id(source), pipe=pipe)
    time.sleep(float(value))


def make_ni(source: Any, target: dict[str, Any], ns: str, prop: str, name: str) -> None:
    """``make-ni``: ``target[name]`` the NI ``ns:value`` of the source's string ``prop``, or
    the sorted NIs of its strings when it is a list."""
    v = source.get(prop) if isinstance(source, dict) else None
    if isinstance(v, str):
        target[name] = NI(f"{ns}:{v}")
    elif isinstance(v, list):
        target[name] = sorted((NI(f"{ns}:{x}") for x in v if isinstance(x, str)), key=order_key)


def _id(source: Any) -> Any:
    return source.get("_id") if isinstance(source, dict) else None


def _comment(rg: RuleGen, args: list[Any], where: str) -> Lines:
    return []


_TRANSFORMS: dict[str, Callable[[RuleGen, list[Any], str], Lines]] = {
    "add": RuleGen.add,
    "add-if": RuleGen.add_if,
    "default": lambda rg, a, w: rg.add(a, w, only_new=True),
    "copy": RuleGen.copy,
    "remove": lambda rg, a, w: rg.copy(a, w, remove=True),
    "rename": RuleGen.rename,
    "merge": RuleGen.merge,
    "merge-union": lambda rg, a, w: rg.merge(a, w, union=True),
    "filter": lambda rg, a, w: rg.stop(a, w, discard=False),
    "discard": lambda rg, a, w: rg.stop(a, w, discard=True),
    "if": RuleGen.if_,
    "case": RuleGen.case,
    "case-eq": lambda rg, a, w: rg.case(a, w, eq=True),
    "create": RuleGen.create,
    "create-child": lambda rg, a, w: rg.create(a, w, child=True),
    "comment": _comment,
    "fail!": lambda rg, a, w: rg.raise_(a, w, trip=False),
    "trip!": lambda rg, a, w: rg.raise_(a, w, trip=True),
    "make-ni": RuleGen.make_ni,
    "sleep!": RuleGen.sleep,
}

#: (min, max) arguments of each transform (max None: unbounded).
_ARITY: dict[str, tuple[int, int | None]] = {
    "add": (2, 2), "add-if": (2, 3), "default": (2, 2), "copy": (1, 2), "remove": (1, 2),
    "rename": (2, 2), "merge": (1, 1), "merge-union": (1, 1), "filter": (0, 1),
    "discard": (0, 1), "if": (2, 3), "case": (2, None), "case-eq": (3, None), "create": (1, 1),
    "create-child": (1, 1), "comment": (0, None), "fail!": (1, 1), "trip!": (1, 1),
    "make-ni": (2, 3), "sleep!": (1, 1),
}
