"""Jinja2 templates in a sandbox: ``id_expression``, URLs, params, headers and payloads.

Templates are compiled once (when the component is built) and rendered per entity or request.
The sandbox refuses attribute access to Python internals; an undefined variable is an error, not
an empty string.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.errors import BadDataError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


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

    def render(self, location: str, /, **variables: Any) -> str:
        """Render with ``variables``.

        Args:
            location: what is being rendered for (a file and record, a request), named in errors.

        Raises:
            BadDataError: a variable is undefined or rendering failed.
        """
        template = self._template
        try:
            context = template.new_context({**self._globals, **variables}, shared=True)
            return template.environment.concat(template.root_render_func(context))
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise BadDataError(f"{self.name} {self.source!r} failed: {exc}", location=location) from exc


def check_template(value: str, name: str) -> str:
    """Pydantic validator helper: raise ValueError if ``value`` does not compile."""
    Template(value, name)
    return value
