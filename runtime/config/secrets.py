"""``$ENV(name)`` and ``$SECRET(name)`` substitution (Sesam's syntax) and the :class:`Secret` type.

``$ENV(name)`` is replaced by the environment variable ``name``. ``$SECRET(name)`` is looked up
first in the secrets file (a JSON or YAML object of name -> string), then in the environment; a
string holding a secret becomes a :class:`Secret` whose ``repr``/``str`` is ``***``, so it is never
logged or echoed. Only config keys typed to accept a :class:`Secret` take one: a secret anywhere
else is a config problem (:func:`misplaced_secrets`), and so is a plain string in a key typed
``Secret`` alone when the config is validated with :data:`SECRETS_REQUIRED` as pydantic context
(the loader does; settings from the environment and models built in code accept plain strings).
A malformed secrets file is reported by position only, never by content.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, get_args

import orjson
import yaml
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

_PATTERN = re.compile(r"\$(ENV|SECRET)\(([^)]*)\)")
_REQUIRED = "secrets_required"
SECRETS_REQUIRED = {_REQUIRED: True}
"""Validation context under which a key typed ``Secret`` refuses a plain string."""


class Secret:
    """A string that must not be shown: ``str()`` and ``repr()`` give ``***``.

    Args:
        value: the revealed value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself; use only where it is sent to the system that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _v: "***"),
        )

    @classmethod
    def _validate(cls, value: Any, info: core_schema.ValidationInfo) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            if (info.context or {}).get(_REQUIRED):
                raise PydanticCustomError(
                    "plain_secret", "a plain value in a key that takes a secret; use $SECRET(name) "
                    "and keep the value in the secrets file or the environment")
            return cls(value)
        raise ValueError("expected a string or $SECRET(name)")


def reveal(value: str | Secret) -> str:
    """The plain value of a string or a :class:`Secret`."""
    return value.reveal() if isinstance(value, Secret) else value


class Secrets:
    """Where ``$SECRET(name)`` values come from: a secrets file, then the environment.

    Args:
        file: JSON or YAML file holding one object of name -> string, or None.
        environ: the environment (defaults to ``os.environ``).

    Raises:
        ValueError: the file cannot be read or is not an object of strings (message names it).
    """

    def __init__(self, file: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.values: dict[str, str] = {}
        if file is not None:
            self.values = _read_secrets_file(file)

    def secret(self, name: str) -> str | None:
        """The secret's value, or None when neither the file nor the environment has it."""
        return self.values.get(name, self.environ.get(name))

    def env(self, name: str) -> str | None:
        """The environment variable's value, or None."""
        return self.environ.get(name)


def _read_secrets_file(file: Path) -> dict[str, str]:
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"secrets file {file}: cannot be read: {exc.strerror}") from exc
    try:
        data = orjson.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"secrets file {file}: {_where(exc)} (content not shown: it holds secrets)") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"secrets file {file}: must hold one object of name -> string")
    return {str(k): v for k, v in data.items()}


def _where(exc: Exception) -> str:
    """Where a secrets file fails to parse, by line and column (1-based) only: the messages of
    PyYAML and orjson quote the offending content, which may be a secret."""
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not valid JSON at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not valid YAML: not UTF-8 text at byte {exc.position}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark, start = exc.problem_mark, exc.context_mark
        where = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}"
        return where + (f" (scanning from line {start.line + 1}, column {start.column + 1})" if start else "")
    return "not valid YAML"


def misplaced_secrets(model: BaseModel, skip: Collection[str] = ()) -> list[str]:
    """Key paths (``entities[0].key``) of the :class:`Secret` values ``model`` holds in keys that
    are not typed to take one (``Any``, ``dict[str, Any]``: where a secret would be written into
    datasets, rendered as ``***`` or fail to serialise at run time).

    Args:
        model: a validated config model (nested models are searched too).
        skip: field names not to search (raw objects validated by models of their own).
    """
    found: list[str] = []
    for name, field in type(model).model_fields.items():
        if name not in skip:
            found.extend(_walk(getattr(model, name), field.alias or name, _takes_secret(field.annotation)))
    return found


def _walk(value: Any, key: str, allowed: bool) -> Iterator[str]:
    if isinstance(value, Secret):
        if not allowed:
            yield key
    elif isinstance(value, BaseModel):
        yield from (f"{key}.{k}" for k in misplaced_secrets(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}", allowed)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _walk(v, f"{key}[{i}]", allowed)


def _takes_secret(annotation: Any) -> bool:
    return annotation is Secret or any(_takes_secret(a) for a in get_args(annotation))


def substitute(value: Any, secrets: Secrets, problem: Callable[[str, str], None], key: str = "") -> Any:
    """Replace ``$ENV(..)``/``$SECRET(..)`` in every string of a JSON-like value.

    Args:
        value: the parsed config object (dicts, lists, scalars).
        secrets: where values come from.
        problem: called as ``problem(key_path, reason)`` for each unknown name; the reason never
            contains a secret value.
        key: key path of ``value`` (for problems).

    Returns:
        A copy with substitutions; strings holding a secret become :class:`Secret`.
    """
    if isinstance(value, dict):
        return {k: substitute(v, secrets, problem, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, secrets, problem, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    has_secret = False

    def replace(match: re.Match[str]) -> str:
        nonlocal has_secret
        kind, name = match.group(1), match.group(2)
        found = secrets.env(name) if kind == "ENV" else secrets.secret(name)
        if kind == "SECRET":
            has_secret = True
        if found is None:
            where = "environment" if kind == "ENV" else "secrets file or environment"
            problem(key, f"${kind}({name}) is not set in the {where}")
            return ""
        return found

    result = _PATTERN.sub(replace, value)
    return Secret(result) if has_secret else result
