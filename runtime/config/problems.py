"""Collecting config problems: every problem of every object, then one :class:`ConfigError`.

Key paths follow the config as written: ``source.entities[0].key``, ``auth.token`` (pydantic's
union tags such as ``auth.bearer.token`` are left out, they are not keys of the file).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from runtime.config.secrets import Secret
from runtime.errors import ConfigProblem

MISPLACED_SECRET = "$SECRET(...) is not allowed here; only keys that take secrets accept one"


class Problems:
    """The problems found so far, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, file: str, obj: str | None, key: str, reason: str) -> None:
        """Record one problem of object ``obj`` (its ``_id``) at ``key`` in ``file``."""
        self.items.append(ConfigProblem(file, obj, key, reason))

    def from_validation(
        self, file: str, obj: str | None, prefix: str, exc: ValidationError, body: Any
    ) -> None:
        """Record each error of ``exc``, raised validating ``body`` found at key ``prefix``.

        The errors of the members of a union are merged: at one key into one reason (``... , or
        ...``); the error of a member the input did not even have the shape of (``transform``
        being a list, not an object) is left out when another member names a key inside it. The
        reason never repeats the input value (it may be a secret).
        """
        reasons: dict[str, list[str]] = {}
        members: set[str] = set()  # keys whose every error is a union member's
        for err in exc.errors():
            path, in_union = key_path(body, err["loc"])
            key = join(prefix, path)
            if key not in reasons and in_union:
                members.add(key)
            elif not in_union:
                members.discard(key)
            reasons.setdefault(key, []).append(_reason(err))
        for key, texts in reasons.items():
            if key in members and any(other.startswith((f"{key}.", f"{key}[")) for other in reasons):
                continue
            self.add(file, obj, key, ", or ".join(dict.fromkeys(texts)))


def _reason(err: Any) -> str:
    if isinstance(err.get("input"), Secret):
        return MISPLACED_SECRET
    return "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])


def join(prefix: str, path: str) -> str:
    """``prefix`` and a key path below it (``path`` may start with ``[i]``)."""
    if not prefix or not path:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def key_path(body: Any, loc: tuple[int | str, ...]) -> tuple[str, bool]:
    """The key path of a pydantic error location, following the keys of ``body`` (the input),
    and whether parts were left out (the error is one member's of a union).

    A location part that is not a key of the input is kept only when it is the last part (a
    missing key); one inside the location is a union tag (``bearer``, ``str``) and is dropped.
    """
    path = ""
    dropped = False
    current: Any = body
    for n, part in enumerate(loc):
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path, current = f"{path}[{part}]", current[part]
        elif isinstance(current, dict) and part in current:
            path, current = join(path, str(part)), current[part]
        elif isinstance(current, dict) and n == len(loc) - 1:
            path = join(path, str(part))
        else:
            dropped = True
    return path, dropped
