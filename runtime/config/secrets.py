"""``$ENV(name)`` and ``$SECRET(name)`` substitution (Sesam's syntax) and the :class:`Secret` type.

``$ENV(name)`` is replaced by the environment variable ``name``. ``$SECRET(name)`` is looked up
first in the secrets file (a JSON or YAML object of name -> string), then in the environment; a
string holding a secret becomes a :class:`Secret` whose ``repr``/``str`` is ``***``, so it is never
logged or echoed. Only config keys typed to accept a :class:`Secret` take one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_PATTERN = re.compile(r"\$(ENV|SECRET)\(([^)]*)\)")


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
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _v: "***"),
        )

    @classmethod
    def _validate(cls, value: Any) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
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
        data = orjson.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"secrets file {file}: cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"secrets file {file}: must hold one object of name -> string")
    return {str(k): v for k, v in data.items()}


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
