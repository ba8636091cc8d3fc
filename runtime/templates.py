"""Jinja2 templates in a sandbox: ``id_expression``, URLs, params, headers and payloads.

Templates are compiled once (when the component is built) and rendered per entity or request.
The sandbox refuses attribute access to Python internals; an undefined variable is an error, not
an empty string.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.errors import BadDataError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_PLAIN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""A template that is one variable and nothing else (``{{ Id }}``): rendered as Jinja renders it,
``str(value)``, without building a Jinja context (2-3 us an entity, the bulk of an id_expression)."""
_WORDS = {"true", "false", "none", "True", "False", "None"}


class Template:
    """A compiled sandboxed Jinja2 template.

    Args:
        source: the template text.
        name: where it is configured (``source.id_expression``), named in errors.

    Raises:
        ValueError: the template does not compile (message names ``name`` and the reason).
    """

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        try:
            self._template = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"{name}: template syntax error: {exc.message}") from exc
        # the globals flattened once: Jinja's render() copies its ChainMap on every call (half
        # of the ~12 us a small template costs; REST transforms render one URL per entity)
        self._globals = dict(self._template.globals)
        plain = _PLAIN.fullmatch(source)
        self._plain = plain[1] if plain and plain[1] not in _WORDS else None
        # no tag at all (an operation's fixed URL, e.g. "/records"): Jinja would give it back as
        # it is (it drops one trailing newline, so such a text takes the Jinja path)
        self._constant = source if "{" not in source and not source.endswith("\n") else None

    def render(self, location: str, /, **variables: Any) -> str:
        """Render with ``variables``.

        Args:
            location: what is being rendered for (a file and record, a request), named in errors.

        Raises:
            BadDataError: a variable is undefined or rendering failed.
        """
        if self._constant is not None:
            return self._constant
        if self._plain is not None:
            name = self._plain
            value = variables[name] if name in variables else self._globals.get(name, _MISSING)
            if value is _MISSING:
                raise BadDataError(f"{self.name} {self.source!r} failed: {name!r} is undefined", location=location)
            return str(value)
        template = self._template
        try:
            context = template.new_context({**self._globals, **variables}, shared=True)
            return template.environment.concat(template.root_render_func(context))
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise BadDataError(f"{self.name} {self.source!r} failed: {exc}", location=location) from exc


_MISSING = object()


def check_template(value: str, name: str) -> str:
    """Pydantic validator helper: raise ValueError if ``value`` does not compile."""
    Template(value, name)
    return value
