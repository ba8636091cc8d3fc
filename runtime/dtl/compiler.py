"""Compile DTL expressions (JSON) into closures ``Expr = (Env) -> value``, once.

The shapes of an expression (Sesam ``hub/dtl/expression-language.rst``, ``paths.rst``):

* ``[name, arg, ...]``: a call of a registered function (:mod:`runtime.dtl.functions`), its arity
  checked here; a few names are special forms compiled here instead (``literal``, and those a
  caller adds, e.g. the rule set's ``apply``);
* a path string (``"_S.a.b"``, ``"_."``, ``"_T"``; :mod:`runtime.dtl.paths`);
* a transit string (``"~t2020-01-01T00:00:00Z"`` ...): a typed literal (:func:`values.decode`);
* any other string, number, bool, null or dict: itself (a dict is a literal, not evaluated).

Problems are collected, not raised one by one: :meth:`Compiler.check` raises one
:class:`~runtime.errors.DtlCompileError` listing each, with its position as the problem's key
(``transform.rules.default[3][2]: unknown function 'concatt'``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from runtime.dtl import codegen, paths, values
from runtime.dtl.functions import Env, Expr, FunctionSpec, load
from runtime.errors import ConfigProblem, DtlCompileError

#: A special form: ``(compiler, raw arguments, position) -> Expr``; it compiles its own arguments.
SpecialForm = Callable[["Compiler", list[Any], str], Expr]


class Compiler:
    """Compiles expressions, collecting every problem; one compiler per pipe (or rule set).

    Args:
        file: the config file named in problems (``"<dtl>"`` when there is none).
        pipe: the pipe ``_id`` named in problems.
        special: extra special forms by name (they shadow registered functions).
    """

    def __init__(self, *, file: str = "<dtl>", pipe: str | None = None,
                 special: Mapping[str, SpecialForm] | None = None) -> None:
        self.file = file
        self.pipe = pipe
        self.functions: dict[str, FunctionSpec] = load()
        self.special: dict[str, SpecialForm] = dict(special or {})
        self.problems: list[ConfigProblem] = []

    def problem(self, where: str, reason: str) -> None:
        """Record a problem at position ``where``."""
        self.problems.append(ConfigProblem(self.file, self.pipe, where, reason))

    def check(self) -> None:
        """Raises:
            DtlCompileError: one or more problems were recorded (all of them listed)."""
        if self.problems:
            raise DtlCompileError(self.problems)

    def expr(self, raw: Any, where: str) -> Expr:
        """Compile ``raw`` at position ``where``; a bad part records a problem and compiles to a
        closure returning null (so that compiling can go on and find the other problems)."""
        if isinstance(raw, list):
            return self._call(raw, where)
        if isinstance(raw, str) and paths.is_path(raw):
            return self._path(raw, where)
        return _const(self.constant(raw, where))

    def constant(self, raw: Any, where: str) -> Any:
        """The value of a constant expression (a transit string or a dict is decoded); null,
        with a problem recorded, for a bad typed literal."""
        if not isinstance(raw, str | dict):
            return raw
        try:
            return values.decode(raw)
        except ValueError as exc:
            self.problem(where, f"bad typed literal {raw!r}: {exc}" if isinstance(raw, str)
                         else f"bad typed literal in dict: {exc}")
            return None

    def callee(self, raw: list[Any], where: str) -> FunctionSpec | SpecialForm | str | None:
        """What a call ``[name, ...]`` names: a special form, a registered function, or
        ``"literal"``; None (a problem recorded) for an empty list, a name that is not a string
        or an unknown function."""
        if not raw:
            self.problem(where, 'an empty list is not an expression (write ["list"])')
            return None
        name = raw[0]
        if not isinstance(name, str):
            self.problem(where, f"a call starts with a function name, got {name!r}")
            return None
        if name == "literal" and "literal" not in self.special:
            return "literal"
        if name in self.special:
            return self.special[name]
        spec = self.functions.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, [*self.functions, *self.special, "literal"], 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(where, f"unknown function {name!r}{hint}")
        return spec

    def literal(self, args: list[Any], where: str) -> Any:
        """The value of ``["literal", X]``: X unevaluated (typed transit literals decoded); null,
        with a problem recorded, for a wrong arity or a bad typed literal."""
        if not self.arity("literal", args, where, 1, 1):
            return None
        try:
            return values.decode(args[0])
        except ValueError as exc:
            self.problem(f"{where}[1]", f"bad typed literal: {exc}")
            return None

    def arity(self, name: str, args: list[Any], where: str, lo: int, hi: int | None) -> bool:
        """Check ``lo <= len(args) <= hi`` (``hi`` None: no maximum), recording a problem if not."""
        if len(args) >= lo and (hi is None or len(args) <= hi):
            return True
        want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
        self.problem(where, f"{name!r} takes {want} argument{'s' if want != '1' else ''}, "
                            f"got {len(args)}")
        return False

    def args(self, args: list[Any], where: str, start: int = 1) -> list[Expr]:
        """Compile call arguments; argument ``i`` (from ``start``) is at ``where[i]``."""
        return [self.expr(a, f"{where}[{i}]") for i, a in enumerate(args, start)]

    def _call(self, raw: list[Any], where: str) -> Expr:
        callee = self.callee(raw, where)
        if callee is None:
            return _const(None)
        args = raw[1:]
        if isinstance(callee, str):  # "literal"
            return _const(self.literal(args, where))
        if not isinstance(callee, FunctionSpec):
            return callee(self, args, where)
        compiled = self.args(args, where)
        if not self.arity(callee.name, args, where, callee.min_args, callee.max_args):
            return _const(None)
        return _bind(callee, compiled)

    def _path(self, raw: str, where: str) -> Expr:
        try:
            head, keys = paths.parse(raw)
        except ValueError as exc:
            self.problem(where, str(exc))
            return _const(None)
        if not keys:
            return lambda env: env.variables.get(head)
        ns_var = paths.NAMESPACES_VAR
        if len(keys) == 1:
            return _path1(head, keys[0], ns_var)
        return lambda env: paths.traverse(env.variables.get(head), keys, env.variables.get(ns_var))


def compile_expression(raw: Any, *, where: str = "expression", file: str = "<dtl>",
                       pipe: str | None = None) -> Expr:
    """Compile one expression into a generated function ``(env) -> value``
    (:mod:`runtime.dtl.codegen`).

    Raises:
        DtlCompileError: every problem in it, each with its position under ``where``.
    """
    compiler = Compiler(file=file, pipe=pipe)
    compiled = codegen.generate(compiler, raw, where)
    compiler.check()
    return compiled


def _const(value: Any) -> Expr:
    return lambda env: value


def _path1(head: str, key: str, ns_var: str) -> Expr:
    """A one-key path (``_S.name``, the common case): a dict's key read directly when no
    namespaces are set, else :func:`paths.traverse`."""
    keys = [key]

    def path1(env: Env) -> Any:
        v = env.variables
        value, ns = v.get(head), v.get(ns_var)
        if ns is None and type(value) is dict:
            return value.get(key)
        return paths.traverse(value, keys, ns)
    return path1


def _bind(spec: FunctionSpec, args: list[Expr]) -> Expr:
    """The closure calling ``spec`` with ``args`` (specialised by arity for speed)."""
    impl = spec.impl
    if spec.lazy:
        return lambda env: impl(env, *args)
    if len(args) == 1:
        (a,) = args
        return lambda env: impl(a(env))
    if len(args) == 2:
        a, b = args
        return lambda env: impl(a(env), b(env))
    return lambda env: impl(*[x(env) for x in args])


