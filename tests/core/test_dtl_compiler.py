"""The DTL compiler and rule sets (runtime/dtl/compiler.py, rules.py): problems named by position,
all at once; expressions compiled once into closures; the transforms the vectors do not cover."""

from __future__ import annotations

import pytest

from runtime.dtl import paths
from runtime.dtl.compiler import Compiler, compile_expression
from runtime.dtl.functions import Env
from runtime.dtl.rules import RuleSet
from runtime.errors import (
    ConfigError,
    DtlCompileError,
    DtlFailError,
    DtlTripError,
    EntityError,
)


def test_rule_set_problems_are_all_reported_with_their_positions() -> None:
    rules = {
        "default": [
            ["copy", "_id"],
            ["add", "x", ["concatt", "a", "b"]],
            ["add", "y", ["if", ["gt", "_S.a"], ["eq", 1, 2]]],
            ["frobnicate", 1],
            ["add", "z", ["apply", "nope", "_S.items"]],
            ["add", "w", "_S.'unterminated"],
        ],
    }
    with pytest.raises(DtlCompileError) as caught:
        RuleSet(rules, where="transform.rules", file="pipes.yaml", pipe="people")
    err = caught.value
    assert isinstance(err, ConfigError)
    found = {(p.key, p.reason.split(" (")[0]) for p in err.problems}
    assert found == {
        ("transform.rules.default[1][2]", "unknown function 'concatt'"),
        ("transform.rules.default[2][2][1]", "'gt' takes 2 arguments, got 1"),
        ("transform.rules.default[3]", "unknown transform 'frobnicate'"),
        ("transform.rules.default[4][2][1]", "'apply' names no rule of this rule set: 'nope'"),
        ("transform.rules.default[5][2]", "unterminated quoted element in path \"_S.'unterminated\""),
    }
    assert all(p.file == "pipes.yaml" and p.pipe == "people" for p in err.problems)
    assert "pipes.yaml: people: transform.rules.default[1][2]: unknown function 'concatt'" in str(err)


def test_expression_problems_name_nested_positions_and_suggest_a_name() -> None:
    with pytest.raises(DtlCompileError) as caught:
        compile_expression(["and", ["eqq", "_S.a", 1], [], [7]], where="x")
    reasons = {p.key: p.reason for p in caught.value.problems}
    assert reasons == {
        "x[1]": "unknown function 'eqq' (did you mean 'eq'?)",
        "x[2]": 'an empty list is not an expression (write ["list"])',
        "x[3]": "a call starts with a function name, got 7",
    }


def test_an_expression_compiled_once_evaluates_without_the_compiler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    expr = compile_expression(
        ["case-eq", "_S.kind", "a", ["list", "_S.n", "_S.'x.y'"], ["coalesce-args", "_S.m", 0]])
    rules = RuleSet({"default": [["copy", "_id"], ["add", "n", ["if", ["gt", "_S.n", 5], "big", "small"]]]})

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again while evaluating")
    # A guard, not a stand-in: evaluation must never reach the compiler again.
    monkeypatch.setattr(Compiler, "expr", no_compiling)
    monkeypatch.setattr(Compiler, "_call", no_compiling)
    results = [expr(Env({"_S": {"kind": "a" if i % 2 else "b", "n": i, "x.y": -i}}))
               for i in range(1000)]
    assert results[1] == [1, -1] and results[2] == 0 and results[999] == [999, -999]
    out = [rules.apply({"_id": str(i), "n": i}) for i in range(10)]
    assert out[3] == [{"_id": "3", "n": "small"}] and out[9] == [{"_id": "9", "n": "big"}]


def test_filter_marks_the_target_and_discard_drops_it() -> None:
    rules = {"default": [["copy", "_id"], ["filter", ["eq", "_S.keep", True]], ["add", "after", 1]]}
    assert RuleSet(rules).apply({"_id": "a", "keep": False}) == [{"_id": "a", "_filtered": True}]
    assert RuleSet(rules).apply({"_id": "b", "keep": True}) == [{"_id": "b", "after": 1}]
    discard = {"default": [["copy", "_id"], ["create", ["list", {"_id": "c"}]], ["discard", False]]}
    assert RuleSet(discard).apply({"_id": "a"}) == []


def test_fail_and_trip_name_the_entity() -> None:
    with pytest.raises(DtlFailError, match=r"entity 'e1'.*bad input"):
        RuleSet({"default": [["fail!", "bad input"]]}).apply({"_id": "e1"})
    with pytest.raises(DtlTripError, match=r"entity 'e2'.*stop"):
        RuleSet({"default": [["trip!", "stop"]]}).apply({"_id": "e2"})


def test_namespaced_paths_follow_the_pipe_settings() -> None:
    expr = compile_expression("_S.a")
    entity = {"a": 1, "foo:a": 2, "bar:a": [3, 4]}
    assert expr(Env({"_S": entity})) == 1
    ns = paths.Namespaces(identity="foo", property="bar")
    assert expr(Env({"_S": entity, paths.NAMESPACES_VAR: ns})) == [1, 2, 3, 4]


def test_created_entities_need_an_id() -> None:
    rules = RuleSet({"default": [["copy", "_id"], ["create", "_S.orders"]]})
    assert rules.apply({"_id": "p", "orders": [{"_id": "o1"}]}) == [{"_id": "p"}, {"_id": "o1"}]
    with pytest.raises(EntityError, match=r"rules.default\[1\]: 'create' made an entity without '_id'"):
        rules.apply({"_id": "p", "orders": [{"amount": 1}]})


def test_create_child_never_changes_the_source() -> None:
    source = {"_id": "p", "$children": [{"_id": "old"}], "kids": [{"_id": "k"}]}
    rules = RuleSet({"default": [["copy", "*"], ["create-child", "_S.kids"]]})
    out = rules.apply(source)
    assert out[0]["$children"] == [{"_id": "old"}, {"_id": "k"}]
    assert source["$children"] == [{"_id": "old"}]


def test_copy_patterns_are_names_and_an_empty_branch_is_no_transform() -> None:
    rules = RuleSet({"default": [["copy", "_S.*"], ["if", True, [], ["add", "no", 1]]]})
    assert rules.apply({"_id": "a", "_S.x": 1, "y": 2}) == [{"_S.x": 1}]
