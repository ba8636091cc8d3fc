"""DTL functions inlined into generated code (:mod:`runtime.dtl.codegen`).

Each inliner gives the source of a call from its arguments' :class:`Code`: a fast path for the
argument types the function is mostly called with (two strings or integers compared, a string
upper-cased, integers added), and else the registered implementation, so that the semantics stay
the implementation's (Sesam's, :mod:`runtime.dtl.functions`). Arguments are evaluated once each,
left to right (into temporaries, ``(_t1 := ...)``), as the closures evaluate them; lazy functions
(``if``, ``case``, ``and`` ...) evaluate only what the closures would.

:data:`EAGER`: name -> inliner, which may decline (None: a direct call of the implementation).
:data:`LAZY`: name -> (the argument counts it inlines, inliner); other counts are closures.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from runtime.dtl.codegen import Code, Gen
from runtime.dtl.functions import REGISTRY, load
from runtime.dtl.functions.core import dtl_equal, first_not_null, is_null, not_null, path_of
from runtime.dtl.functions.lists import sort_values

load()
_SCALARS = (str, int, bool)
#: Argument counts inlined: longer chains (case, and, concat ...) are closures or calls, Python's
#: parser recursing once per link.
MAX_CHAIN = 40
Inliner = Callable[[Gen, list[Code]], Code | None]


def _literal(code: Code, kinds: tuple[type, ...]) -> bool:
    """``code`` is a literal of one of ``kinds`` (only literals are simple with a scalar kind)."""
    return code.simple and code.kind in kinds


def equal(gen: Gen, a: Code, b: Code) -> str:
    """A Python bool expression: ``eq`` of ``a`` and ``b`` (:func:`dtl_equal`)."""
    deq = gen.unit.name(dtl_equal, "_f")
    if _literal(a, _SCALARS) and not _literal(b, _SCALARS):
        a, b = b, a  # a literal is evaluated in no time: the order of evaluation is kept
    if _literal(b, _SCALARS):
        if _literal(a, _SCALARS):
            return repr(dtl_equal(ast.literal_eval(a.src), ast.literal_eval(b.src)))  # known now
        fa, ra = gen.operand(a)
        if b.kind is bool:  # true or false: the value itself, or a list holding it
            return f"({fa} is {b.src} or {ra} is not None and type({ra}) is not bool and {deq}({ra}, {b.src}))"
        kind = b.kind.__name__  # type: ignore[union-attr]
        return f"({ra} == {b.src} if type({fa}) is {kind} else False if {ra} is None else {deq}({ra}, {b.src}))"
    fa, ra = gen.operand(a)
    fb, rb = gen.operand(b)
    k = gen.unit.temp()
    return (f"({ra} == {rb} if ({k} := type({fa})) is type({fb}) and ({k} is str or {k} is int "
            f"or {k} is bool) else {deq}({ra}, {rb}))")


def _eq(gen: Gen, codes: list[Code]) -> Code | None:
    return Code(equal(gen, *codes), bool) if len(codes) == 2 else None


def _neq(gen: Gen, codes: list[Code]) -> Code:
    return Code(f"(not {equal(gen, *codes)})", bool)


def _compare(op: str, name: str) -> Inliner:
    """``gt`` ``gte`` ``lt`` ``lte``: two strings or two integers compared directly."""
    def inline(gen: Gen, codes: list[Code]) -> Code:
        impl = gen.unit.name(REGISTRY[name].impl, "_f")
        a, b = codes
        for lit, other, flip in ((b, a, False), (a, b, True)):
            if _literal(lit, (int, str)):
                f, r = gen.operand(other)
                kind = lit.kind.__name__  # type: ignore[union-attr]
                left, right = (lit.src, r) if flip else (r, lit.src)
                return Code(f"({left} {op} {right} if type({f}) is {kind} else {impl}({left}, {right}))", bool)
        fa, ra = gen.operand(a)
        fb, rb = gen.operand(b)
        k = gen.unit.temp()
        return Code(f"({ra} {op} {rb} if ({k} := type({fa})) is type({fb}) and ({k} is int or {k} is str) "
                    f"else {impl}({ra}, {rb}))", bool)
    return inline


def _typed(gen: Gen, codes: list[Code], kind: type) -> tuple[list[str], list[str]] | None:
    """``(checks, refs)`` for a fast path over operands of type ``kind``: a test of each operand
    that is not a literal (evaluating it, in order), and how to read each again; None when a
    literal is of another type (the fast path would never run)."""
    checks, refs = [], []
    for code in codes:
        if code.simple and code.kind is not None:  # a literal
            if code.kind is not kind:
                return None
            refs.append(code.src)
            continue
        f, r = gen.operand(code)
        checks.append(f"(type({f}) is {kind.__name__})")
        refs.append(r)
    return checks, refs


def _arithmetic(op: str) -> Inliner:
    """``+`` ``-`` ``*``: two integers computed directly."""
    def inline(gen: Gen, codes: list[Code]) -> Code | None:
        typed = _typed(gen, codes, int)
        if typed is None:
            return None
        checks, refs = typed
        a, b = refs
        if not checks:
            return Code(f"({a} {op} {b})", int)
        impl = gen.unit.name(REGISTRY[op].impl, "_f")
        return Code(f"({a} {op} {b} if {' & '.join(checks)} else {impl}({a}, {b}))")
    return inline


def _string_method(method: str, name: str) -> Inliner:
    """``upper`` ``lower``: one string's method called directly."""
    def inline(gen: Gen, codes: list[Code]) -> Code:
        (a,) = codes
        if a.kind is str:
            return Code(f"{a.src}.{method}()", str)
        f, r = gen.operand(a)
        impl = gen.unit.name(REGISTRY[name].impl, "_f")
        return Code(f"({r}.{method}() if type({f}) is str else {impl}({r}))")
    return inline


def _concat(gen: Gen, codes: list[Code]) -> Code | None:
    """``concat`` of strings: ``+``."""
    if len(codes) > MAX_CHAIN:
        return None
    typed = _typed(gen, codes, str)
    if typed is None:
        return None
    checks, refs = typed
    joined = " + ".join(refs)
    if not checks:
        return Code(f"({joined})", str)
    impl = gen.unit.name(REGISTRY["concat"].impl, "_f")
    return Code(f"({joined} if {' & '.join(checks)} else {impl}({', '.join(refs)}))", str)


def _and_or(op: str) -> Callable[[Gen, list[Code]], Code]:
    def inline(gen: Gen, codes: list[Code]) -> Code:
        return Code(f"({f' {op} '.join(gen.truth(c) for c in codes)})", bool)
    return inline


def _if(gen: Gen, codes: list[Code]) -> Code:
    cond, then, *otherwise = codes
    other = otherwise[0] if otherwise else Code("None", type(None), True)
    return Code(f"({then.src} if {gen.truth(cond)} else {other.src})",
                then.kind if then.kind is other.kind else None)


def _case(gen: Gen, codes: list[Code]) -> Code:
    """``case``: the first true condition's value, else the default."""
    pairs = [(gen.truth(codes[i]), codes[i + 1].src) for i in range(0, len(codes) - 1, 2)]
    default = codes[-1].src if len(codes) % 2 else "None"
    return Code("(" + " else ".join(f"{v} if {t}" for t, v in pairs) + f" else {default})")


def _case_eq(gen: Gen, codes: list[Code]) -> Code:
    """``case-eq``: the value evaluated once (in the first test), compared with each key."""
    value, rest = codes[0], codes[1:]
    again = value
    if not value.simple:
        t = gen.unit.temp()
        value, again = Code(f"({t} := {value.src})"), Code(t, simple=True)
    tests = [equal(gen, value if i == 0 else again, rest[i]) for i in range(0, len(rest) - 1, 2)]
    default = rest[-1].src if len(rest) % 2 else "None"
    values = [rest[i + 1].src for i in range(0, len(rest) - 1, 2)]
    return Code("(" + " else ".join(f"{v} if {t}" for t, v in zip(tests, values, strict=True))
                + f" else {default})")


def _if_null(gen: Gen, codes: list[Code]) -> Code:
    f, r = gen.operand(codes[0])
    return Code(f"({codes[1].src} if {gen.unit.name(is_null, '_f')}({f}) else {r})")


def _coalesce_args(gen: Gen, codes: list[Code]) -> Code:
    """``coalesce-args``: each argument evaluated only while the ones before it are null."""
    parts: list[str] = []
    for code in codes[:-1]:
        if _literal(code, (type(None),)):
            continue  # null: the next one
        if _literal(code, _SCALARS):
            return Code("(" + " else ".join([*parts, code.src]) + ")")  # never null: the last tried
        f, r = gen.operand(code)
        parts.append(f"{r} if {f} is not None")
    return Code("(" + " else ".join([*parts, codes[-1].src]) + ")")


def _direct(impl: Callable[..., Any], *extra: str, kind: type | None = None,
            ns: bool = False) -> Callable[[Gen, list[Code]], Code]:
    """A call of ``impl`` with the arguments, then ``extra`` sources (and ``ns`` if asked)."""
    def inline(gen: Gen, codes: list[Code]) -> Code:
        if ns:
            gen.needs.add("ns")
        args = [c.src for c in codes] + list(extra) + (["ns"] if ns else [])
        return Code(f"{gen.unit.name(impl, '_f')}({', '.join(args)})", kind)
    return inline


def _sorted(reverse: bool) -> Callable[[Gen, list[Code]], Code]:
    """``sorted``/``sorted-descending`` of one list of strings or of integers: Python's
    ``sorted`` (DTL order within these types), else :func:`sort_values`."""
    def inline(gen: Gen, codes: list[Code]) -> Code:
        f, r = gen.operand(codes[0])
        k = gen.unit.temp()
        impl = gen.unit.name(sort_values, "_f")
        return Code(f"(sorted({r}, reverse={reverse}) if type({f}) is list and len({k} := set(map(type, {r}))) == 1 "
                    f"and (str in {k} or int in {k}) else {impl}({r}, {reverse}))", list)
    return inline


def _list(gen: Gen, codes: list[Code]) -> Code:
    return Code(f"[{', '.join(c.src for c in codes)}]", list)


def _is_not_null(gen: Gen, codes: list[Code]) -> Code:
    return Code(f"(not {gen.unit.name(is_null, '_f')}({codes[0].src}))", bool)


def _not(gen: Gen, codes: list[Code]) -> Code:
    return Code(f"(not {gen.truth(codes[0])})", bool)


EAGER: dict[str, Inliner] = {
    "eq": _eq, "neq": _neq,
    "gt": _compare(">", "gt"), "gte": _compare(">=", "gte"),
    "lt": _compare("<", "lt"), "lte": _compare("<=", "lte"),
    "+": _arithmetic("+"), "-": _arithmetic("-"), "*": _arithmetic("*"),
    "upper": _string_method("upper", "upper"), "lower": _string_method("lower", "lower"),
    "concat": _concat, "list": _list, "not": _not,
    "is-null": _direct(is_null, kind=bool),
    "is-not-null": _is_not_null,
}

def _short(n: int) -> bool:
    return n <= MAX_CHAIN


def _one(n: int) -> bool:
    return n == 1


LAZY: dict[str, tuple[Callable[[int], bool], Callable[[Gen, list[Code]], Code]]] = {
    "and": (_short, _and_or("and")), "or": (_short, _and_or("or")),
    "if": (_short, _if), "case": (_short, _case), "case-eq": (_short, _case_eq),
    "if-null": (_short, _if_null), "coalesce-args": (_short, _coalesce_args),
    "coalesce": (_one, _direct(first_not_null)), "filter": (_one, _direct(not_null, kind=list)),
    "sorted": (_one, _sorted(False)), "sorted-descending": (_one, _sorted(True)),
    "path": (_short, _direct(path_of, ns=True)),
}
