"""The DTL function library, driven by the conformance vectors (``shared/conformance/dtl/vectors.json``:
worked examples of Sesam's DTL documentation; found as the conformance test finds them).

Without the compiler, a vector is checked here when its expression is one call of a library
function whose arguments are literals, nested ``list`` calls or nested calls of library
functions (evaluated here, innermost first) of such arguments: the registered impl is
called on the decoded arguments (a lazy impl gets ``lambda env: value`` closures) and its result
compared with the decoded expected value (numbers by value, with the vector's tolerance). The
others (nested calls, paths, ``_`` functions) need the compiler; :data:`UNCHECKED` lists them.
"""

from __future__ import annotations

import decimal
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime.dtl.functions import Env, load
from runtime.dtl.values import NI, URI, Datetime, decode
from runtime.errors import FatalError

_SHARED = Path(os.environ.get("SLUICE_SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
_FILE = _SHARED / "conformance" / "dtl" / "vectors.json"
if not _FILE.exists():
    pytest.skip(f"no conformance vectors at {_FILE} (shared/ is cloned beside the repo in CI)",
                allow_module_level=True)
VECTORS = json.loads(_FILE.read_text())
REGISTRY = load()

# Functions the compiler side owns (core.py, rules.py) or that are transforms.
CORE = {
    "and", "or", "not", "all", "any", "eq", "neq", "gt", "gte", "lt", "lte", "in", "if", "case",
    "case-eq", "is-null", "is-not-null", "if-null", "coalesce", "coalesce-args", "literal",
    "list", "path", "apply", "apply-ns", "map", "filter", "variables", "truthiness",
    "path-string", "add", "add-if", "default", "copy", "remove", "rename", "merge",
    "merge-union", "discard", "create", "create-child", "comment", "fail!", "trip!", "make-ni",
}
MINE = [v for v in VECTORS if v["function"] not in CORE and not v["function"].startswith("transform-")]
_PATH = re.compile(r"_[A-Z]?(\..*)?")


class NeedsCompiler(Exception):
    """Raised for an argument that only the compiler can evaluate."""


def call(name: str, args: list[Any]) -> Any:
    spec = REGISTRY[name]
    if spec.lazy:
        return spec.impl(Env(), *[lambda env, value=a: value for a in args])
    return spec.impl(*args)


def literal(arg: Any) -> Any:
    """A literal argument as a DTL value; a nested ``list`` call as a Python list; a nested call
    of an eager library function (with such arguments) as its result."""
    if isinstance(arg, list):
        if arg and arg[0] == "list":
            return [literal(a) for a in arg[1:]]
        if arg and arg[0] in REGISTRY and arg[0] not in CORE:
            return call(arg[0], [literal(a) for a in arg[1:]])
        raise NeedsCompiler(f"nested call {arg[0]!r}")
    if isinstance(arg, str) and _PATH.fullmatch(arg):
        raise NeedsCompiler(f"path {arg!r}")
    return decode(arg)


def direct_args(vector: dict[str, Any]) -> list[Any] | None:
    if vector["expression"][0] not in REGISTRY or vector["expression"][0] in CORE:
        return None
    try:
        return [literal(a) for a in vector["expression"][1:]]
    except NeedsCompiler:
        return None


CHECKED = [v for v in MINE if v["kind"] == "expression" and direct_args(v) is not None]
UNCHECKED = sorted(v["id"] for v in MINE if v not in CHECKED)


def same(actual: Any, expected: Any, tolerance: float) -> bool:
    """DTL equality for the vectors: numbers by value (a decimal expected needs a Decimal; bool
    is never a number), lists and dicts element by element, other values by type and value."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, int | float | decimal.Decimal):
        if isinstance(expected, decimal.Decimal) and not isinstance(actual, decimal.Decimal):
            return False
        return isinstance(actual, int | float | decimal.Decimal) and abs(actual - expected) <= tolerance
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(same(a, e, tolerance) for a, e in zip(actual, expected, strict=True)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(same(actual[k], expected[k], tolerance) for k in expected))
    return type(actual) is type(expected) and actual == expected


def test_every_library_function_of_the_vectors_is_registered() -> None:
    missing = sorted({v["function"] for v in MINE} - REGISTRY.keys())
    assert missing == []


def test_how_many_vectors_are_checked_directly() -> None:
    # 385 vectors of 111 library functions: 335 checked directly below, 50 need the compiler.
    assert (len(MINE), len(CHECKED), len(UNCHECKED)) == (385, 335, 50)


@pytest.mark.parametrize("vector", CHECKED, ids=[v["id"] for v in CHECKED])
def test_vector(vector: dict[str, Any]) -> None:
    args = direct_args(vector)
    assert args is not None
    actual = call(vector["expression"][0], args)
    expected = decode(vector["expected"])
    assert same(actual, expected, vector["tolerance"] or 0), (vector["notes"], actual)


@pytest.mark.parametrize(("name", "args", "needle"), [
    ("datetime-plus", ["fortnight", 1, None], "unknown unit 'fortnight'"),
    ("datetime-diff", ["eon", None, None], "unknown unit 'eon'"),
    ("datetime-format", ["Mars/Olympus", "%Y", None], "unknown timezone 'Mars/Olympus'"),
    ("phonenumber-format", ["morse", None], "unknown format 'morse'"),
    ("hash128", ["md5", "abc"], "unknown algorithm 'md5'"),
])
def test_a_bad_constant_argument_is_an_error_naming_the_function(name: str, args: list[Any],
                                                                  needle: str) -> None:
    with pytest.raises(FatalError, match=f"DTL function {name}: {needle}"):
        call(name, args)


@pytest.mark.parametrize(("name", "args", "needle"), [
    ("ljust", ["ten", "0", "123"], "WIDTH must be an integer, got 'ten'"),
    ("rjust", [10, 0, "123"], "FILL must be a string, got 0"),
    ("substring", [1.5, "abc"], "START must be an integer, got 1.5"),
    ("insert", [None, [1], 2], "INDEX must be an integer, got None"),
    ("range", [True], "START/STOP/STEP must be an integer, got True"),
    ("slice", ["1", [1, 2]], "START/END/STEP must be an integer, got '1'"),
    ("round", ["2", 1.234], "DIGITS must be an integer, got '2'"),
    ("datetime-plus", ["day", "1", None], "AMOUNT must be an integer, got '1'"),
    ("split", [None, "a-b"], "SEPARATOR must be a string, got None"),
    ("url-quote", [1, "a b"], "SAFE_CHARS must be a string, got 1"),
])
def test_a_bad_width_index_or_separator_is_an_error_naming_the_argument(
        name: str, args: list[Any], needle: str) -> None:
    with pytest.raises(FatalError, match=re.escape(f"DTL function {name}: {needle}")):
        call(name, args)


@pytest.mark.parametrize("name", ["plus", "minus", "multiply", "divide", "mod", "pow"])
def test_a_map_style_operator_with_a_null_operand_gives_null(name: str) -> None:
    # Sesam: "If either argument evaluates to null, the result will also be null."
    assert call(name, [None, [1, 2]]) is None


def test_sorted_follows_dtls_mixed_type_order_for_every_type() -> None:
    # entity-data-model.rst: Null < Boolean < numbers < Datetime < UUID < NI < URI < String <
    # Dict < List < Bytes; numbers by value whatever their type.
    ordered = [None, False, True, -1, decimal.Decimal("0.5"), 1.5, 2,
               Datetime(0), uuid.UUID(int=1), NI("a:b"), URI("http://x/"), "A", "a",
               {"a": 1}, {"a": 2}, [1], [1, 2], b"\x00"]
    assert call("sorted", [ordered[::-1]]) == ordered
    assert call("min", [ordered[::-1]]) is None and call("max", [ordered]) == b"\x00"


def test_set_functions_treat_equal_numbers_of_different_types_as_one_value() -> None:
    assert call("distinct", [[1, 1.0, decimal.Decimal(1), True]]) == [1, True]
    assert call("union", [[1], [1.0, 2]]) == [1, 2]
    assert call("intersects", [2.0, [decimal.Decimal(2)]]) is True
