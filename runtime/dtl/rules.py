"""DTL rule sets: ``{"default": [TRANSFORM, ...], "other": [...]}`` compiled once into one
generated Python function per rule (:mod:`runtime.dtl.transforms`).

Each rule builds a target ``_T`` from a source ``_S`` by running its transforms in order
(Sesam ``hub/dtl/transforms.rst``, ``variables.rst``). Transforms (first element of each list):

``add``/``default`` PROP VALUE, ``add-if`` PROP [CONDITION] VALUE (default condition: VALUE is not
null), ``copy``/``remove`` PATTERN [EXCLUDE] (fnmatch wildcards; copy reads ``_S``, remove edits
``_T``), ``rename`` OLD NEW (from ``_S``, null values too), ``merge``/``merge-union`` VALUES (root
``_`` keys dropped), ``filter``/``discard`` [CONDITION] (a false or absent condition stops the rule:
``filter`` emits the target with ``_filtered: true``, ``discard`` emits nothing), ``if`` COND THEN
[ELSE], ``case`` COND T ... [DEFAULT], ``case-eq`` VALUE K T ... [DEFAULT] (THEN/T: one transform or a
list of them), ``create`` VALUES (extra output entities, each with an ``_id``), ``create-child``
VALUES (into the target's ``$children``), ``comment`` ..., ``fail!``/``trip!`` MESSAGE (raise), ``sleep!`` SECONDS,
``make-ni`` NS PROP [TARGET] (``PROP-ni``: NIs ``NS:value`` of ``_S``'s string values, a list sorted).

In expressions, ``["hops", SPEC, ...]`` and ``["apply-hops", RULE, SPEC, ...]`` join other
datasets (:mod:`runtime.dtl.hops`; evaluate through :class:`~runtime.dtl.hops.HopResolver`);
``["apply", RULE, VALUES]`` runs the named rule with each dict of VALUES as ``_S``;
inside it ``_P`` is the caller's context and ``_R`` the root's (dicts with ``_S``, ``_T``, ``_P``,
``_R``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.dtl import codegen, paths
from runtime.dtl import hops as hops_
from runtime.dtl.compiler import Compiler
from runtime.dtl.functions import Env, Expr, as_list
from runtime.dtl.transforms import DISCARDED, FILTERED, RuleGen

#: A generated rule: ``(source, parent context, root context, emitted, namespaces, resolver)
#: -> (target, status)`` (:mod:`runtime.dtl.transforms`).
RuleFunction = Callable[..., tuple[dict[str, Any], int]]
#: The generated ``default`` rule over a batch: ``(entities, namespaces, resolver) -> outputs``.
BatchFunction = Callable[..., list[list[dict[str, Any]]]]


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
        self.required_hops: set[str] = set()  # hopped-to datasets that must be populated before a run
        self.hop_prefetch: list[tuple[hops_.Index, Expr]] = []  # see HopResolver.apply
        self.where = where
        self.compiler = Compiler(file=file, pipe=pipe, special={"apply": self._apply_form, **hops_.forms(self)})
        self.pipe = pipe
        self._rules: dict[str, RuleFunction] = {}
        if not isinstance(rules, dict):
            self.compiler.problem(where, f"rules must be a dict of rule name -> list, got {rules!r}")
            rules = {}
        elif "default" not in rules:
            self.compiler.problem(where, "no 'default' rule")
        self._names = set(rules)
        unit = codegen.Unit(f"<dtl {where}>")
        generator = RuleGen(codegen.Gen(self.compiler, unit), pipe)
        functions = {name: f"_rule{i}" for i, name in enumerate(rules)}
        source = "\n".join(generator.rule(functions[name], body, f"{where}.{name}")
                           for name, body in rules.items())
        self.compiler.check()
        if not self.hop_indexes:  # generated again, in a loop (it compiles as it did: no problem)
            source += "\n" + generator.batch("_batch", rules["default"], f"{where}.default",
                                             unit.name(self.apply, "_apply"))
        module = unit.build(source)
        self._rules.update((name, module[f]) for name, f in functions.items())
        #: with hops (evaluated through HopResolver.apply), entity by entity
        self._batch: BatchFunction = module.get("_batch") or (
            lambda entities, ns, hops: [self.apply(e, ns, hops) for e in entities])

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
        target, status = self._rules["default"](entity, None, None, emitted, namespaces, hops)
        if status == DISCARDED:
            return []
        if status == FILTERED:
            target["_filtered"] = True
        return [target, *emitted] if emitted else [target]

    def apply_batch(self, entities: list[dict[str, Any]],
                    namespaces: paths.Namespaces | None = None) -> list[list[dict[str, Any]]]:
        """:meth:`apply` (without hops) over each of ``entities``, one output list per entity,
        in order; without hops in the rules the ``default`` rule's code runs in one loop, with no
        call per entity.

        Raises:
            as :meth:`apply`, for the first entity that fails.
        """
        return self._batch(entities, namespaces, None)

    # --- the expression special form ``apply`` -----------------------------------------------

    def _apply_form(self, compiler: Compiler, args: list[Any], where: str) -> Expr:
        if not compiler.arity("apply", args, where, 2, 2):
            return lambda env: None
        return self.applier(args[0], compiler.expr(args[1], f"{where}[2]"), compiler, where, "apply")

    def applier(self, rule: Any, values: Expr, compiler: Compiler, where: str, name: str) -> Expr:
        """The closure of ``[name, RULE, ...]`` (``apply``, ``apply-hops``): the named rule run
        with each dict of ``values`` as ``_S`` (a discarded target left out); a RULE this rule set
        lacks is a problem."""
        if not isinstance(rule, str) or rule not in self._names:
            compiler.problem(f"{where}[1]", f"{name!r} names no rule of this rule set: {rule!r}")
            return lambda env: None
        rules = self._rules  # filled once every rule is generated

        def apply(env: Env) -> Any:
            v = env.variables
            parent = {k: v.get(k) for k in ("_S", "_T", "_P", "_R")}
            run = rules[rule]
            emitted, ns, resolver = v["$emitted"], v.get(paths.NAMESPACES_VAR), v.get(hops_.RESOLVER_VAR)
            out = []
            for item in as_list(values(env)):
                target, status = run(item, parent, parent["_R"], emitted, ns, resolver)
                if status != DISCARDED:
                    out.append(target)
            return out
        return apply
