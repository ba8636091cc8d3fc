"""The generated code of rule sets (runtime/dtl/transforms.py) against the conformance vectors
(``shared/conformance/dtl/vectors.json``, found as the conformance test finds them): every
expression vector evaluated inside a rule (``["add", "v", EXPRESSION]``: the rule's scope, not the
standalone expression's) gives what the standalone expression gives, and every rule vector gives
the same outputs run one entity at a time (:meth:`RuleSet.apply`, one generated function per rule)
and in a batch (:meth:`RuleSet.apply_batch`, the default rule's code in one loop)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runtime.dtl import paths, values
from runtime.dtl.compiler import Compiler
from runtime.dtl.functions import Env, Expr
from runtime.dtl.rules import RuleSet
from runtime.errors import DtlCompileError, SluiceError

_SHARED = Path(os.environ.get("SLUICE_SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
_FILE = _SHARED / "conformance" / "dtl" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(_FILE.read_text()) if _FILE.exists() else []
pytestmark = pytest.mark.skipif(not VECTORS, reason=f"no conformance vectors at {_FILE}")


def _outcome(run: Any, *args: Any) -> Any:
    """What ``run(*args)`` gives, in transit form, or the type of error it raises."""
    try:
        return values.encode(run(*args))
    except SluiceError as exc:
        return type(exc)


def _closure(raw: Any) -> Expr:
    compiler = Compiler()
    compiled = compiler.expr(raw, "x")
    compiler.check()
    return compiled


def test_every_expression_vector_gives_the_same_value_inside_a_rule() -> None:
    differ = []
    for v in (v for v in VECTORS if v["kind"] == "expression"):
        source, context = v["source_entity"], v["context"]
        env = Env({"_S": values.decode(source), paths.NAMESPACES_VAR: paths.Namespaces.from_context(context)})
        alone = _outcome(lambda raw, e: _closure(raw)(e), copy.deepcopy(v["expression"]), env)
        rules = RuleSet({"default": [["add", "v", copy.deepcopy(v["expression"])]]})
        ns = paths.Namespaces.from_context(context)
        in_rule = _outcome(lambda r, s, n: r.apply(values.decode(s), n)[0].get("v"), rules, source, ns)
        batched = _outcome(lambda r, s, n: r.apply_batch([values.decode(s)], n)[0][0].get("v"),
                           rules, source, ns)
        if not alone == in_rule == batched:
            differ.append((v["id"], alone, in_rule, batched))
    assert not differ, differ


def test_every_rule_vector_gives_the_same_outputs_one_by_one_and_in_a_batch() -> None:
    checked = 0
    for v in (v for v in VECTORS if v["kind"] == "rule"):
        rules = RuleSet(copy.deepcopy(v["rules"]))
        ns = paths.Namespaces.from_context(v["context"])
        entities = [values.decode(e) for e in v["input_entities"]]
        one_by_one = _outcome(lambda r, es, n: [r.apply(e, n) for e in es], rules, copy.deepcopy(entities), ns)
        batched = _outcome(lambda r, es, n: r.apply_batch(es, n), rules, copy.deepcopy(entities), ns)
        assert one_by_one == batched, v["id"]
        checked += 1
    assert checked == 63


def test_filter_discard_and_create_leave_the_rule_alike_one_by_one_and_in_a_batch() -> None:
    rules = RuleSet({"default": [
        ["copy", "_id"],
        ["if", ["eq", "_S.kind", "gone"], ["discard"]],
        ["case-eq", "_S.kind", "hidden", [["add", "seen", True], ["filter"]], ["add", "shown", True]],
        ["create", ["apply", "order", "_S.orders"]],
        ["add", "after", 1],
    ], "order": [["add", "_id", ["concat", "_P._S._id", "-", "_S.k"]], ["filter", ["gt", "_S.n", 0]]]})
    entities = [{"_id": "a", "kind": "gone"}, {"_id": "b", "kind": "hidden"},
                {"_id": "c", "kind": "x", "orders": [{"n": 1, "k": "x"}, {"n": 0, "k": "y"}]}]
    expected = [[], [{"_id": "b", "seen": True, "_filtered": True}],
                [{"_id": "c", "shown": True, "after": 1}, {"_id": "c-x"}, {"_id": "c-y"}]]
    assert [rules.apply(e) for e in copy.deepcopy(entities)] == expected
    assert rules.apply_batch(copy.deepcopy(entities)) == expected


def test_transforms_nest_40_levels_deep_and_deeper_is_a_compile_error() -> None:
    def nested(depth: int) -> list[Any]:
        rule: list[Any] = ["add", "deep", True]
        for _ in range(depth):
            rule = ["if", True, rule]
        return [["copy", "_id"], rule]

    rules = RuleSet({"default": nested(40)})
    assert rules.apply_batch([{"_id": "a"}]) == [[{"_id": "a", "deep": True}]] == [rules.apply({"_id": "a"})]
    with pytest.raises(DtlCompileError) as caught:
        RuleSet({"default": nested(41)})
    assert [p.reason for p in caught.value.problems] == ["transforms nested deeper than 40 levels"]
