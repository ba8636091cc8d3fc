"""What ``sluice describe`` prints and the README's config reference is made of: the keys of a
config model, read from the model itself (Benthos: docs are generated from the specs).

Per key: the key as written in config (the field alias, e.g. ``_id``), a readable type, the
default (``required`` or JSON) and the meaning, taken from the Google-style ``Attributes:``
sections of the model's docstrings across its MRO. An entry may name several keys
(``connect_timeout, read_timeout: seconds``); continuation lines are indented further. Models
used as field types (paging, auth variants, retry rules) are described too, each in its own table.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from runtime.config.models import PipeModel, PumpConfig, SystemModel
from runtime.config.secrets import Secret
from runtime.plugins import KINDS, Kind, Registry

KIND_ORDER = ("pipe", "pump", *KINDS)
_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any",
                            Secret: "secret"}
_ENTRY = re.compile(r"^(?P<names>[\w.]+(?:\s*[,/]\s*[\w.]+)*)\s*:\s*(?P<text>.*)$")


@dataclass(frozen=True)
class KeyDoc:
    """One config key: ``key`` as written, ``type`` text, ``default`` (``required`` or JSON), ``meaning``."""

    key: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class ModelDoc:
    """The keys of one model; ``path`` is where a nested model sits (``operations.*.paging``),
    empty for the described target itself."""

    path: str
    name: str
    summary: str
    keys: list[KeyDoc]


@dataclass(frozen=True)
class Target:
    """Something ``sluice describe`` can describe: ``kind`` (``pipe``, ``pump``, ``source``, ...),
    ``type_name`` (``file``, ``system:rest``; empty for pipe and pump), its config model and the
    one-line summary of its class."""

    kind: str
    type_name: str
    model: type[BaseModel]
    summary: str

    @property
    def label(self) -> str:
        """``pipe`` or ``source file``."""
        return f"{self.kind} {self.type_name}".strip()


def parse_attributes(doc: str | None) -> dict[str, str]:
    """The entries of a Google-style ``Attributes:`` section: ``{key: meaning}`` (one line each;
    an entry naming several keys, ``a, b: text`` or ``a / b: text``, gives each the text)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    header, entry_indent = _indent(lines[start]), None
    entries: list[tuple[list[str], list[str]]] = []
    for line in (x for x in lines[start + 1:] if x.strip()):
        indent = _indent(line)
        if indent <= header:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if match:
            entries.append((re.split(r"\s*[,/]\s*", match["names"]), [match["text"]]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: " ".join(t for t in text if t) for names, text in entries for name in names}


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Meanings of a model's keys from the ``Attributes:`` sections of it and its bases
    (a subclass's entry wins)."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(parse_attributes(vars(cls).get("__doc__")))
    return docs


def type_text(annotation: Any) -> str:
    """Readable type: ``string``, ``list of integer``, ``"a" | "b"``, ``object (PagingConfig)``,
    ``secret``, with ``| null`` last when None is allowed."""
    members = list(_flatten(annotation))
    texts = [_one_type(m) for m in members if not _is_model(m) and m is not type(None)]
    models = [m.__name__ for m in members if _is_model(m)]
    if models:
        texts.append(f"object ({' | '.join(models)})")
    if type(None) in members:
        texts.append("null")
    return " | ".join(texts)


def default_text(field: FieldInfo) -> str:
    """``required``, or the default as JSON (a default_factory's value too; a default model as
    the keys that differ from its own defaults, usually ``{}``)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)


def model_keys(model: type[BaseModel]) -> list[KeyDoc]:
    """Every key of ``model`` in declaration order (an empty meaning when undocumented)."""
    docs = attribute_docs(model)
    return [
        KeyDoc(field.alias or name, type_text(field.annotation), default_text(field),
               plain(docs.get(field.alias or name) or docs.get(name, "")))
        for name, field in model.model_fields.items()
    ]


def describe(target: Target, nested: bool = True) -> list[ModelDoc]:
    """The target's own table, then (``nested``) one per model used in its field types, in order
    of first appearance. A system's table starts with ``_id`` (kept out of its config model)."""
    keys = model_keys(target.model)
    if target.kind == "system":
        keys = [k for k in model_keys(SystemModel) if k.key == "_id"] + keys
    docs = [ModelDoc("", target.model.__name__, target.summary, keys)]
    if nested:
        docs += [ModelDoc(path, m.__name__, summary(m), model_keys(m)) for path, m in nested_models(target.model)]
    return docs


def nested_models(model: type[BaseModel], prefix: str = "", seen: set[type] | None = None) -> list[tuple[str, Any]]:
    """``(path, model)`` for each model reachable through ``model``'s field types, each once."""
    seen = {model} if seen is None else seen
    found: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        for path, sub in _models_in(field.annotation, prefix + (field.alias or name)):
            if sub not in seen:
                seen.add(sub)
                found += [(path, sub), *nested_models(sub, path + ".", seen)]
    return found


def targets(registry: Registry) -> list[Target]:
    """Every describable target: ``pipe``, ``pump``, then each registered type by kind and name."""
    found = [Target("pipe", "", PipeModel, summary(PipeModel)), Target("pump", "", PumpConfig, summary(PumpConfig))]
    for kind in KINDS:
        classes = {name: registry.get(kind, name) for name in registry.names(kind)}
        found += [Target(kind, name, cls.Config, summary(cls)) for name, cls in classes.items() if cls]
    return found


def find_target(registry: Registry, kind: str, type_name: str | None) -> Target:
    """The target ``kind`` / ``type_name``; a system may be named with or without ``system:``.

    Raises:
        LookupError: unknown kind, unknown type (the message lists the known ones), a type given
            for ``pipe`` / ``pump``, or none given for a component kind.
    """
    if kind not in KIND_ORDER:
        raise LookupError(f"unknown kind {kind!r}; known: {', '.join(KIND_ORDER)}")
    if kind in ("pipe", "pump"):
        if type_name:
            raise LookupError(f"{kind} takes no TYPE; run `sluice describe {kind}`")
        return next(t for t in targets(registry) if t.kind == kind)
    if kind == "system" and type_name and not type_name.startswith("system:"):
        type_name = f"system:{type_name}"
    known = cast(Kind, kind)
    if not type_name or registry.get(known, type_name) is None:
        raise LookupError(f"unknown {kind} type {type_name!r}; known: {', '.join(registry.names(known))}")
    return next(t for t in targets(registry) if t.kind == kind and t.type_name == type_name)


def summary(cls: type) -> str:
    """The first sentence of a class's own docstring, as plain text."""
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")
    paragraph = doc.split("\n\n")[0].replace("\n", " ")
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return plain(match.group(1) if match else paragraph)


def plain(text: str) -> str:
    """reST inline markup as Markdown: double-backtick literals and ``:role:`X``` references
    become single-backtick code."""
    return re.sub(r"``(.+?)``", r"`\1`", re.sub(r":\w+:`([^`]+)`", r"`\1`", text))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _flatten(tp: Any) -> Iterator[Any]:
    """The members of a (possibly Annotated) union, or the type itself."""
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _flatten(get_args(tp)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _flatten(arg)
    else:
        yield tp


def _one_type(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is list:
        return f"list of {_inner(args[0])}" if args else "list"
    if origin is dict:
        return f"object of {_inner(args[1])}" if args and args[1] is not Any else "object"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))


def _inner(tp: Any) -> str:
    text = type_text(tp)
    return f"({text})" if " | " in text else text


def _models_in(tp: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, model)`` for the models in a type: ``x[]`` inside a list, ``x.*`` in an object."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Annotated, Union, types.UnionType):
        for member in _flatten(tp):
            yield from _models_in(member, path)
    elif origin is list and args:
        yield from _models_in(args[0], path + "[]")
    elif origin is dict and args:
        yield from _models_in(args[1], path + ".*")
    elif _is_model(tp):
        yield path, tp
