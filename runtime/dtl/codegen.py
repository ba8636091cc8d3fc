"""Generate Python source from DTL expressions, compiled once (``compile``/``exec``) per rule set or
expression, so that evaluating an entity runs straight-line Python, not a tree of closures.

A :class:`Gen` turns an expression into a :class:`Code`, a Python expression over the locals of
the function being generated (``S``, ``T``, ``ns``, ... as a :class:`Scope` names them):

* a path string becomes a dict look-up (``S.get('name')``) when namespaced identifiers are off and
  the value is a dict, else :func:`paths.lookup` (lists mapped and flattened, namespaces);
* a constant becomes a literal (or a module name for typed values);
* common functions are inlined (:mod:`runtime.dtl.inline`) with a fast path for their usual
  argument types and the registered implementation for the rest; any other eager function is a
  direct call of its implementation;
* the rest (lazy functions binding ``_``, ``apply``, ``hops``, expressions nested deeper than
  :data:`MAX_DEPTH`) is the :class:`Compiler`'s closure, called with an ``Env`` of the variables.

Problems are recorded on the compiler exactly as its closures record them (same positions, same
messages), each part of an expression being compiled once, either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from runtime.dtl import paths
from runtime.dtl.functions import Env, Expr, FunctionSpec, truthy

if TYPE_CHECKING:
    from runtime.dtl.compiler import Compiler

#: Expressions nested deeper than this are closures (Python's parser limits nesting).
MAX_DEPTH = 40

#: Names every generated module sees.
HELPERS: dict[str, Any] = {"_lookup": paths.lookup, "_traverse": paths.traverse, "_truthy": truthy,
                           "_Env": Env}


@dataclass(frozen=True)
class Code:
    """A generated Python expression.

    Attributes:
        src: its source.
        kind: the exact Python type of every value it gives (``bool``, ``str``, ``int``,
            ``NoneType``), or None when unknown.
        simple: a name or a literal: evaluating it again costs nothing and changes nothing.
    """

    src: str
    kind: type | None = None
    simple: bool = False


NULL = Code("None", type(None), True)


@dataclass(frozen=True)
class Scope:
    """How generated code reaches DTL's variables.

    Attributes:
        variables: DTL variable (``_S``, ``_T``, ``_P``, ``_R``, ``_``) -> Python local; an absent
            variable is null.
        fast: DTL variable -> a local that is true when namespaced identifiers are off and the
            variable's value is a dict (so a path step is ``.get``).
        env: a Python expression giving the ``Env`` closures are called with.
    """

    variables: Mapping[str, str]
    fast: Mapping[str, str] = field(default_factory=dict)
    env: str = "env"

    def bind(self, local: str) -> Scope:
        """This scope with ``_`` bound to the Python local ``local``."""
        fast = {k: v for k, v in self.fast.items() if k != "_"}
        return replace(self, variables={**self.variables, "_": local}, fast=fast,
                       env=f"{self.env}.bind({local})")


class Unit:
    """One generated module: the names its code refers to, temporaries, and its build.

    Args:
        filename: shown in tracebacks of the generated code.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.names: dict[str, Any] = dict(HELPERS)
        self._by_id: dict[int, str] = {}
        self._count = 0

    def name(self, value: Any, prefix: str = "_k") -> str:
        """A module name bound to ``value`` (the same name for the same object)."""
        if id(value) not in self._by_id:
            self._count += 1
            self._by_id[id(value)] = f"{prefix}{self._count}"
            self.names[self._by_id[id(value)]] = value
        return self._by_id[id(value)]

    def temp(self) -> str:
        """A new local name for an intermediate value."""
        self._count += 1
        return f"_t{self._count}"

    def build(self, source: str) -> dict[str, Any]:
        """Compile and run ``source``; its module namespace."""
        exec(compile(source, self.filename, "exec"), self.names)
        return self.names


def function(name: str, params: str, body: list[str], prologue: Iterable[str]) -> str:
    """The source of ``def name(params):`` with ``prologue`` then ``body`` (lines, unindented)."""
    lines = [*prologue, *body] or ["pass"]
    return f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in lines)


def prologue(entries: list[tuple[str, str, tuple[str, ...]]], needs: set[str]) -> list[str]:
    """The lines of ``entries`` (``(name, line, names it uses)``, in order) that ``needs`` asks
    for, directly or through another entry."""
    wanted = set(needs)
    for name, _, deps in reversed(entries):
        if name in wanted:
            wanted.update(deps)
    return [line for name, line, _ in entries if name in wanted]


class Gen:
    """Generates the source of expressions for one unit, recording problems on ``compiler``.

    Attributes:
        needs: the locals (of the scope and the prologue: ``S``, ``SF``, ``env`` ...) the code
            generated since the last :meth:`begin` uses.
    """

    def __init__(self, compiler: Compiler, unit: Unit) -> None:
        from runtime.dtl.inline import EAGER, LAZY  # the inliners use this module's Code

        self.compiler = compiler
        self.unit = unit
        self.needs: set[str] = set()
        self._depth = 0
        self._eager: Mapping[str, Callable[[Gen, list[Code]], Code | None]] = EAGER
        self._lazy: Mapping[str, tuple[Callable[[int], bool], Callable[[Gen, list[Code]], Code]]] = LAZY

    def begin(self) -> set[str]:
        """Start a function: forget :attr:`needs`; the old set is returned."""
        old, self.needs = self.needs, set()
        return old

    def expr(self, raw: Any, where: str, scope: Scope) -> Code:
        """The code of expression ``raw`` at position ``where``; a bad part records a problem and
        gives null."""
        if isinstance(raw, list):
            if self._depth >= MAX_DEPTH:
                return self.closure(raw, where, scope)
            self._depth += 1
            try:
                return self._call(raw, where, scope)
            finally:
                self._depth -= 1
        if isinstance(raw, str) and paths.is_path(raw):
            return self._path(raw, where, scope)
        return self.const(self.compiler.constant(raw, where))

    def const(self, value: Any) -> Code:
        """A constant: a literal for null, booleans, integers and strings, else a module name."""
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is str:
            return Code(repr(value), kind, True)
        return Code(self.unit.name(value), None, True)

    def truth(self, code: Code) -> str:
        """A Python bool expression: DTL truthiness of ``code``."""
        return code.src if code.kind is bool else f"_truthy({code.src})"

    def operand(self, code: Code) -> tuple[str, str]:
        """``(first, again)``: ``first`` evaluates ``code`` into a temporary that ``again`` reads
        (both the code itself when it is simple). ``first`` must run before any ``again``."""
        if code.simple:
            return code.src, code.src
        t = self.unit.temp()
        return f"({t} := {code.src})", t

    def call(self, impl: Callable[..., Any], args: list[Code]) -> str:
        """A direct call of ``impl`` with ``args``."""
        return f"{self.unit.name(impl, '_f')}({', '.join(a.src for a in args)})"

    def closure(self, raw: Any, where: str, scope: Scope) -> Code:
        """The compiler's closure of ``raw``, called with the scope's ``Env``."""
        compiled: Expr = self.compiler.expr(raw, where)
        self.needs.add("env")
        return Code(f"{self.unit.name(compiled, '_c')}({scope.env})")

    def var(self, name: str, scope: Scope) -> str:
        """The Python local of DTL variable ``name`` (``None`` if unbound)."""
        local = scope.variables.get(name)
        if local is None:
            return "None"
        self.needs.add(local)
        return local

    def _path(self, raw: str, where: str, scope: Scope) -> Code:
        try:
            head, keys = paths.parse(raw)
        except ValueError as exc:
            self.compiler.problem(where, str(exc))
            return NULL
        base = self.var(head, scope)
        if not keys:
            return Code(base, simple=True)
        self.needs.add("ns")
        if len(keys) > 3:
            return Code(f"_traverse({base}, {self.unit.name(keys)}, ns)")
        key, flag = keys[0], scope.fast.get(head)
        if flag is None:
            src = f"_lookup({base}, {key!r}, ns)"
        else:
            self.needs.add(flag)
            src = f"({base}.get({key!r}) if {flag} else _lookup({base}, {key!r}, ns))"
        for key in keys[1:]:
            t = self.unit.temp()
            self.needs.add("NF")
            src = f"({t}.get({key!r}) if type({t} := {src}) is dict and NF else _lookup({t}, {key!r}, ns))"
        return Code(src)

    def _call(self, raw: list[Any], where: str, scope: Scope) -> Code:
        callee = self.compiler.callee(raw, where)
        if callee is None:
            return NULL
        args = raw[1:]
        if isinstance(callee, str):  # "literal"
            return self.const(self.compiler.literal(args, where))
        if not isinstance(callee, FunctionSpec):
            return self.closure(raw, where, scope)  # a special form (apply, hops ...)
        lazy = self._lazy.get(callee.name)
        if callee.lazy and (lazy is None or not lazy[0](len(args))):
            return self.closure(raw, where, scope)
        codes = [self.expr(a, f"{where}[{i}]", scope) for i, a in enumerate(args, 1)]
        if not self.compiler.arity(callee.name, args, where, callee.min_args, callee.max_args):
            return NULL
        if lazy is not None:
            return lazy[1](self, codes)
        inline = self._eager.get(callee.name)
        return (inline(self, codes) if inline else None) or Code(self.call(callee.impl, codes))


#: The prologue of a standalone expression's function ``(env)``: its variables from the Env.
EXPRESSION_PROLOGUE: list[tuple[str, str, tuple[str, ...]]] = [
    ("V", "V = env.variables", ()),
    ("S", "S = V.get('_S')", ("V",)),
    ("T", "T = V.get('_T')", ("V",)),
    ("P", "P = V.get('_P')", ("V",)),
    ("R", "R = V.get('_R')", ("V",)),
    ("U", "U = V.get('_')", ("V",)),
    ("ns", f"ns = V.get({paths.NAMESPACES_VAR!r})", ("V",)),
    ("NF", "NF = ns is None", ("ns",)),
    ("SF", "SF = NF and isinstance(S, dict)", ("NF", "S")),
    ("TF", "TF = NF and isinstance(T, dict)", ("NF", "T")),
]

EXPRESSION_SCOPE = Scope({"_S": "S", "_T": "T", "_P": "P", "_R": "R", "_": "U"},
                         {"_S": "SF", "_T": "TF"})


def expression_function(gen: Gen, code: Code) -> Expr:
    """The built function ``(env) -> value`` of a standalone expression's ``code`` (generated
    since the last :meth:`Gen.begin`)."""
    source = function("_expr", "env", [f"return {code.src}"], prologue(EXPRESSION_PROLOGUE, gen.needs))
    built: Expr = gen.unit.build(source)["_expr"]
    return built


def generate(compiler: Compiler, raw: Any, where: str) -> Expr:
    """``raw`` at ``where`` as a generated function ``(env) -> value``, problems recorded on
    ``compiler`` (whose special forms it uses)."""
    gen = Gen(compiler, Unit(f"<dtl {where}>"))
    return expression_function(gen, gen.expr(raw, where, EXPRESSION_SCOPE))
