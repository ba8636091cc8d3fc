"""DTL rule sets: ``{"default": [TRANSFORM, ...], "other": [...]}`` compiled once into closures.

Each rule builds a target ``_T`` from a source ``_S`` by running its transforms in order
(Sesam ``hub/dtl/transforms.rst``, ``variables.rst``). Transforms (first element of each list):

``add``/``default`` PROP VALUE, ``add-if`` PROP [CONDITION] VALUE (default condition: VALUE is not
null), ``copy``/``remove`` PATTERN [EXCLUDE] (fnmatch wildcards; copy reads ``_S``, remove edits
``_T``), ``rename`` OLD NEW (from ``_S``, null values too), ``merge``/``merge-union`` VALUES (root
``_`` keys dropped), ``filter``/``discard`` [CONDITION] (a false or absent condition stops the rule:
``filter`` emits the target with ``_filtered: true``, ``discard`` emits nothing), ``if`` COND THEN
[ELSE], ``case`` COND T ... [DEFAULT], ``case-eq`` VALUE K T ... [DEFAULT] (THEN/T: one transform or a
list of them), ``create`` VALUES (extra output entities, each with an ``_id``), ``create-child``
VALUES (into the target's ``$children``), ``comment`` ..., ``fail!``/``trip!`` MESSAGE (raise),
``make-ni`` NS PROP [TARGET] (``PROP-ni``: NIs ``NS:value`` of ``_S``'s string values, a list sorted).

In expressions, ``["hops", SPEC, ...]`` and ``["apply-hops", RULE, SPEC, ...]`` join other
datasets (:mod:`runtime.dtl.hops`; evaluate through :class:`~runtime.dtl.hops.HopResolver`);
``["apply", RULE, VALUES]`` runs the named rule with each dict of VALUES as ``_S``;
inside it ``_P`` is the caller's context and ``_R`` the root's (dicts with ``_S``, ``_T``, ``_P``,
``_R``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.dtl import hops as hops_
from runtime.dtl import paths
from runtime.dtl.compiler import Compiler
from runtime.dtl.functions import Env, Expr, as_list, first, truthy
from runtime.dtl.functions.core import dtl_equal, order_key
from runtime.dtl.values import NI
from runtime.errors import DtlFailError, DtlTripError, EntityError


@dataclass
class _Frame:
    """One rule run: the source, the target being built, and what the run emits."""

    source: Any
    target: dict[str, Any]
    emitted: list[dict[str, Any]]
    filtered: bool = False
    discarded: bool = False


#: A compiled transform: ``(env, frame) -> go on?`` (False after ``filter``/``discard`` stop).
Transform = Callable[[Env, _Frame], bool]


class RuleSet:
    """A compiled rule set.

    Args:
        rules: ``{"default": [...], NAME: [...]}``.
        where: position prefix of problems, e.g. ``transform.rules``.
        file: the config file named in problems; pipe: its pipe ``_id``.

    Raises:
        DtlCompileError: every problem of every rule, each with its position.
    """

    def __init__(self, rules: Any, *, where: str = "rules", file: str = "<dtl>",
                 pipe: str | None = None) -> None:
        #: (dataset, property path) of every hop join, for the indexes the store must hold
        self.hop_indexes: set[hops_.Index] = set()
        self.tracked_hops: dict[hops_.Index, str] = {}  # joins dependency tracking follows -> first position
        self.compiler = Compiler(file=file, pipe=pipe, special={"apply": self._apply_form, **hops_.forms(self)})
        self.pipe = pipe
        self._rules: dict[str, list[Transform]] = {}
        if not isinstance(rules, dict):
            self.compiler.problem(where, f"rules must be a dict of rule name -> list, got {rules!r}")
            rules = {}
        elif "default" not in rules:
            self.compiler.problem(where, "no 'default' rule")
        self._names = set(rules)
        for name, body in rules.items():
            self._rules[name] = self._block(body, f"{where}.{name}")
        self.compiler.check()

    def apply(self, entity: dict[str, Any], namespaces: paths.Namespaces | None = None,
              hops: hops_.HopResolver | None = None) -> list[dict[str, Any]]:
        """Run the ``default`` rule on ``entity``: ``[target] + created entities``; ``[]`` if
        discarded; the target carries ``_filtered: true`` if filtered. Rules with hops need
        ``hops`` (and are evaluated through :meth:`HopResolver.apply`, which passes itself).

        Raises:
            DtlFailError, DtlTripError: a ``fail!``/``trip!`` ran.
            EntityError: a property name that is not a string, or a ``create``d entity without
                ``_id`` (the message names the transform's position).
        """
        emitted: list[dict[str, Any]] = []
        frame = self._run("default", entity, None, emitted, namespaces, hops)
        if frame.discarded:
            return []
        if frame.filtered:
            frame.target["_filtered"] = True
        return [frame.target, *emitted]

    def _run(self, rule: str, source: Any, parent: dict[str, Any] | None,
             emitted: list[dict[str, Any]], namespaces: paths.Namespaces | None,
             hops: hops_.HopResolver | None) -> _Frame:
        frame = _Frame(source, {}, emitted)
        ctx: dict[str, Any] = {"_S": source, "_T": frame.target, "_P": parent}
        ctx["_R"] = parent["_R"] if parent is not None else ctx
        env = Env({**ctx, "$emitted": emitted, paths.NAMESPACES_VAR: namespaces, hops_.RESOLVER_VAR: hops})
        for transform in self._rules[rule]:
            if not transform(env, frame):
                break
        return frame

    # --- the expression special form ``apply`` -----------------------------------------------

    def _apply_form(self, compiler: Compiler, args: list[Any], where: str) -> Expr:
        if not compiler.arity("apply", args, where, 2, 2):
            return lambda env: None
        return self.applier(args[0], compiler.expr(args[1], f"{where}[2]"), compiler, where, "apply")

    def applier(self, rule: Any, values: Expr, compiler: Compiler, where: str, name: str) -> Expr:
        """The closure of ``[name, RULE, ...]`` (``apply``, ``apply-hops``): the named rule run
        with each dict of ``values`` as ``_S``; a RULE this rule set lacks is a problem."""
        if not isinstance(rule, str) or rule not in self._names:
            compiler.problem(f"{where}[1]", f"{name!r} names no rule of this rule set: {rule!r}")
            return lambda env: None

        def apply(env: Env) -> Any:
            v = env.variables
            parent = {k: v.get(k) for k in ("_S", "_T", "_P", "_R")}
            out = []
            for item in as_list(values(env)):
                frame = self._run(rule, item, parent, v["$emitted"], v.get(paths.NAMESPACES_VAR),
                                  v.get(hops_.RESOLVER_VAR))
                if not frame.discarded:
                    out.append(frame.target)
            return out
        return apply

    # --- transforms --------------------------------------------------------------------------

    def _block(self, body: Any, where: str) -> list[Transform]:
        """A list of transforms (a rule body, or THEN of ``if``/``case``)."""
        if not isinstance(body, list):
            self.compiler.problem(where, f"a rule is a list of transforms, got {body!r}")
            return []
        return [t for i, raw in enumerate(body) if (t := self._transform(raw, f"{where}[{i}]"))]

    def _branch(self, raw: Any, where: str) -> list[Transform]:
        """THEN/ELSE of ``if``/``case``: one transform, or a list of transforms (``[]``: none)."""
        if isinstance(raw, list) and (not raw or isinstance(raw[0], list)):
            return self._block(raw, where)
        t = self._transform(raw, where)
        return [t] if t else []

    def _transform(self, raw: Any, where: str) -> Transform | None:
        c = self.compiler
        if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
            c.problem(where, f"a transform is a list starting with its name, got {raw!r}")
            return None
        name, args = raw[0], raw[1:]
        build = _TRANSFORMS.get(name)
        if build is None:
            close = fnmatch.filter(list(_TRANSFORMS), name[:2] + "*")
            hint = f" (transforms: {', '.join(sorted(close))})" if close else ""
            c.problem(where, f"unknown transform {name!r}{hint}")
            return None
        lo, hi = _ARITY[name]
        if not c.arity(name, args, where, lo, hi):
            return None
        return build(self, args, where)

    def _add(self, args: list[Any], where: str, *, only_new: bool = False) -> Transform:
        key, value = self._key(args[0], f"{where}[1]"), self.compiler.expr(args[1], f"{where}[2]")

        def add(env: Env, frame: _Frame) -> bool:
            k = key(env, frame)
            if not (only_new and k in frame.target):
                frame.target[k] = value(env)
            return True
        return add

    def _add_if(self, args: list[Any], where: str) -> Transform:
        key = self._key(args[0], f"{where}[1]")
        cond = self.compiler.expr(args[1], f"{where}[2]") if len(args) == 3 else None
        value = self.compiler.expr(args[-1], f"{where}[{len(args)}]")

        def add_if(env: Env, frame: _Frame) -> bool:
            v = value(env)
            ok = v is not None if cond is None else truthy(cond(env.bind(v)))
            if ok:
                frame.target[key(env, frame)] = v
            return True
        return add_if

    def _copy(self, args: list[Any], where: str, *, remove: bool = False) -> Transform:
        if len(args) == 1 and isinstance(args[0], str) and not any(c in args[0] for c in "*?["):
            return _copy_key(args[0], remove)
        include = self._patterns(args[0], f"{where}[1]")
        exclude = self._patterns(args[1], f"{where}[2]") if len(args) > 1 else None

        def copy(env: Env, frame: _Frame) -> bool:
            inc = [p for p in as_list(include(env)) if isinstance(p, str)]
            exc = [p for p in as_list(exclude(env)) if isinstance(p, str)] if exclude else []
            src = frame.target if remove else frame.source
            if not isinstance(src, dict):
                return True
            keys = [k for k in src if any(fnmatch.fnmatchcase(k, p) for p in inc)
                    and not any(fnmatch.fnmatchcase(k, p) for p in exc)]
            for k in keys:
                if remove:
                    del frame.target[k]
                else:
                    frame.target[k] = src[k]
            return True
        return copy

    def _rename(self, args: list[Any], where: str) -> Transform:
        old, new = self._key(args[0], f"{where}[1]"), self._key(args[1], f"{where}[2]")

        def rename(env: Env, frame: _Frame) -> bool:
            o = old(env, frame)
            if isinstance(frame.source, dict) and o in frame.source:
                frame.target[new(env, frame)] = frame.source[o]
            return True
        return rename

    def _merge(self, args: list[Any], where: str, *, union: bool = False) -> Transform:
        value = self.compiler.expr(args[0], f"{where}[1]")

        def merge(env: Env, frame: _Frame) -> bool:
            for d in as_list(value(env)):
                if not isinstance(d, dict):
                    continue
                for k, v in d.items():
                    if k.startswith("_"):
                        continue
                    if union and k in frame.target:
                        have = as_list(frame.target[k])
                        have = have + [x for x in as_list(v) if not any(
                            dtl_equal(x, h) for h in have)]
                        frame.target[k] = have[0] if len(have) == 1 else have
                    else:
                        frame.target[k] = v
            return True
        return merge

    def _stop(self, args: list[Any], where: str, *, discard: bool) -> Transform:
        cond = self.compiler.expr(args[0], f"{where}[1]") if args else None

        def stop(env: Env, frame: _Frame) -> bool:
            if cond is not None and truthy(cond(env)):
                return True
            if discard:
                frame.discarded = True
            else:
                frame.filtered = True
            return False
        return stop

    def _if(self, args: list[Any], where: str) -> Transform:
        cond = self.compiler.expr(args[0], f"{where}[1]")
        then = self._branch(args[1], f"{where}[2]")
        otherwise = self._branch(args[2], f"{where}[3]") if len(args) > 2 else []
        return lambda env, frame: _run_all(then if truthy(cond(env)) else otherwise, env, frame)

    def _case(self, args: list[Any], where: str, *, eq: bool = False) -> Transform:
        c = self.compiler
        value = c.expr(args[0], f"{where}[1]") if eq else None
        rest, start = (args[1:], 2) if eq else (args, 1)
        pairs = [(c.expr(rest[i], f"{where}[{start + i}]"),
                  self._branch(rest[i + 1], f"{where}[{start + i + 1}]"))
                 for i in range(0, len(rest) - 1, 2)]
        default = self._branch(rest[-1], f"{where}[{start + len(rest) - 1}]") \
            if len(rest) % 2 else []

        def case(env: Env, frame: _Frame) -> bool:
            v = value(env) if value is not None else None
            for test, branch in pairs:
                t = test(env)
                if dtl_equal(v, t) if value is not None else truthy(t):
                    return _run_all(branch, env, frame)
            return _run_all(default, env, frame)
        return case

    def _create(self, args: list[Any], where: str, *, child: bool = False) -> Transform:
        value = self.compiler.expr(args[0], f"{where}[1]")

        def create(env: Env, frame: _Frame) -> bool:
            made = [dict(d) for d in as_list(value(env)) if isinstance(d, dict)]
            if not child and any("_id" not in d for d in made):
                src = frame.source
                raise EntityError(f"DTL {where}: 'create' made an entity without '_id'",
                                  entity_id=src.get("_id") if isinstance(src, dict) else None,
                                  pipe=self.pipe)
            if child:
                frame.target["$children"] = [*as_list(frame.target.get("$children")), *made]
            else:
                frame.emitted.extend(made)
            return True
        return create

    def _raise(self, args: list[Any], where: str, *, trip: bool) -> Transform:
        message = self.compiler.expr(args[0], f"{where}[1]")
        error = DtlTripError if trip else DtlFailError
        pipe = self.pipe

        def fail(env: Env, frame: _Frame) -> bool:
            src = frame.source
            entity_id = src.get("_id") if isinstance(src, dict) else None
            raise error(str(first(message(env))), entity_id=entity_id, pipe=pipe)
        return fail

    def _make_ni(self, args: list[Any], where: str) -> Transform | None:
        if not all(isinstance(a, str) for a in args):
            self.compiler.problem(where, "'make-ni' takes strings: NAMESPACE PROPERTY [TARGET]")
            return None
        ns, prop = args[0], args[1]
        target = args[2] if len(args) > 2 else f"{prop}-ni"

        def make_ni(env: Env, frame: _Frame) -> bool:
            src = frame.source
            v = src.get(prop) if isinstance(src, dict) else None
            if isinstance(v, str):
                frame.target[target] = NI(f"{ns}:{v}")
            elif isinstance(v, list):
                nis = [NI(f"{ns}:{x}") for x in v if isinstance(x, str)]
                frame.target[target] = sorted(nis, key=order_key)
            return True
        return make_ni

    def _patterns(self, raw: Any, where: str) -> Expr:
        """Property patterns of ``copy``/``remove``: a literal string (never a path), or an
        expression giving strings (``["list", "a*", "b*"]``)."""
        if isinstance(raw, str):
            return lambda env: raw
        return self.compiler.expr(raw, where)

    def _key(self, raw: Any, where: str) -> Callable[[Env, _Frame], str]:
        """A property name: a literal string, or an expression giving one."""
        if isinstance(raw, str):
            return lambda env, frame: raw
        expr = self.compiler.expr(raw, where)

        def key(env: Env, frame: _Frame) -> str:
            k = first(expr(env))
            if not isinstance(k, str):
                src = frame.source
                raise EntityError(f"DTL {where}: property name {k!r} is not a string",
                                  entity_id=src.get("_id") if isinstance(src, dict) else None,
                                  pipe=self.pipe)
            return k
        return key


def _copy_key(key: str, remove: bool) -> Transform:
    """``copy``/``remove`` of one property named without wildcards: a key lookup, no matching."""
    def copy_key(env: Env, frame: _Frame) -> bool:
        src = frame.target if remove else frame.source
        if isinstance(src, dict) and key in src:
            if remove:
                del frame.target[key]
            else:
                frame.target[key] = src[key]
        return True
    return copy_key


def _run_all(transforms: list[Transform], env: Env, frame: _Frame) -> bool:
    return all(t(env, frame) for t in transforms)


def _comment(rs: RuleSet, args: list[Any], where: str) -> Transform | None:
    return None


_TRANSFORMS: dict[str, Callable[[RuleSet, list[Any], str], Transform | None]] = {
    "add": RuleSet._add,
    "add-if": RuleSet._add_if,
    "default": lambda rs, a, w: rs._add(a, w, only_new=True),
    "copy": RuleSet._copy,
    "remove": lambda rs, a, w: rs._copy(a, w, remove=True),
    "rename": RuleSet._rename,
    "merge": RuleSet._merge,
    "merge-union": lambda rs, a, w: rs._merge(a, w, union=True),
    "filter": lambda rs, a, w: rs._stop(a, w, discard=False),
    "discard": lambda rs, a, w: rs._stop(a, w, discard=True),
    "if": RuleSet._if,
    "case": RuleSet._case,
    "case-eq": lambda rs, a, w: rs._case(a, w, eq=True),
    "create": RuleSet._create,
    "create-child": lambda rs, a, w: rs._create(a, w, child=True),
    "comment": _comment,
    "fail!": lambda rs, a, w: rs._raise(a, w, trip=False),
    "trip!": lambda rs, a, w: rs._raise(a, w, trip=True),
    "make-ni": RuleSet._make_ni,
}

#: (min, max) arguments of each transform (max None: unbounded).
_ARITY: dict[str, tuple[int, int | None]] = {
    "add": (2, 2), "add-if": (2, 3), "default": (2, 2), "copy": (1, 2), "remove": (1, 2),
    "rename": (2, 2), "merge": (1, 1), "merge-union": (1, 1), "filter": (0, 1),
    "discard": (0, 1), "if": (2, 3), "case": (2, None), "case-eq": (3, None), "create": (1, 1),
    "create-child": (1, 1), "comment": (0, None), "fail!": (1, 1), "trip!": (1, 1),
    "make-ni": (2, 3),
}
