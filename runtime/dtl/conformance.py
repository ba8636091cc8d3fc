"""The adapter the DTL conformance runner calls (``shared/conformance/dtl/run_vectors.py``):

``evaluate(expression, source_entity, context=None)`` and ``apply(rules, entities, context=None)``
take transit JSON (decoded with :func:`values.decode`) and return DTL values
(:mod:`runtime.dtl.values` types, which the runner compares by their transit form). ``context``
is a vector's pipe settings: ``{"namespaced_identifiers": true, "namespaces": {...}}``.
"""

from __future__ import annotations

from typing import Any

from runtime.dtl import paths, values
from runtime.dtl.compiler import compile_expression
from runtime.dtl.functions import Env
from runtime.dtl.rules import RuleSet


def evaluate(expression: Any, source_entity: Any, context: dict[str, Any] | None = None) -> Any:
    """The value of ``expression`` with ``_S`` bound to ``source_entity``.

    Raises:
        DtlCompileError: the expression does not compile.
    """
    expr = compile_expression(expression)
    env = Env({"_S": values.decode(source_entity),
               paths.NAMESPACES_VAR: paths.Namespaces.from_context(context)})
    return expr(env)


def apply(rules: Any, entities: list[Any], context: dict[str, Any] | None = None) -> list[Any]:
    """The output entities of ``rules`` over ``entities``, in order (each target, then what it
    created).

    Raises:
        DtlCompileError: the rules do not compile.
        DtlFailError, DtlTripError: a ``fail!``/``trip!`` ran.
    """
    rule_set = RuleSet(rules)
    namespaces = paths.Namespaces.from_context(context)
    return [out for e in entities for out in rule_set.apply(values.decode(e), namespaces)]
