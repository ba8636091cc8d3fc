"""An operation ready to call: merged config, compiled templates, request rendering, response
parsing and record -> entity conversion, shared by the ``rest`` source and transform.

Merging (Sesam): the system's named operation first, then every operation key set inline on the
source or transform. Templates (sandboxed Jinja2, :mod:`runtime.templates`) see ``since``,
``properties``, in a transform ``entity``, and in a source over work units ``unit`` and
``unit_key``; ``id_expression`` / ``updated_expression`` / ``deleted_expression`` see the
record's own fields (and ``unit`` / ``unit_key`` over work units).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from connectors.rest.models import OPERATION_KEYS, OperationConfig, PagingConfig
from connectors.rest.paging import dig
from connectors.rest.system import Call, Response, RestSystem
from runtime.entities import Entity
from runtime.errors import BadDataError
from runtime.templates import Template

_INT = re.compile(r"^-?\d+$")


def _merge(system: RestSystem, config: Any, pipe: str) -> OperationConfig:
    base = system.operation(config.operation, pipe) if config.operation else OperationConfig()
    values = {k: getattr(config, k) if getattr(config, k) is not None else getattr(base, k)
              for k in OPERATION_KEYS}
    return OperationConfig(**values)


class Operation:
    """A merged, compiled operation of one source or transform.

    Args:
        system: the open REST system.
        config: the source's or transform's config (system, operation, inline keys).
        pipe: the pipe ``_id`` (for errors).

    Raises:
        ConfigError: the named operation does not exist.
    """

    def __init__(self, system: RestSystem, config: Any, pipe: str) -> None:
        op = _merge(system, config, pipe)
        self.system = system
        self.op = op
        self.method = op.method or "GET"
        self.paging: PagingConfig = op.paging or PagingConfig()
        self.url = Template(op.url or "", "url")
        self.params = {k: Template(v, f"params.{k}") for k, v in (op.params or {}).items()}
        self.headers = {k: Template(v, f"headers.{k}") for k, v in (op.headers or {}).items()}
        self.id_template = Template(op.id_expression, "id_expression") if op.id_expression else None
        self.updated_template = (
            Template(op.updated_expression, "updated_expression") if op.updated_expression else None
        )
        self.deleted_template = (
            Template(op.deleted_expression, "deleted_expression") if op.deleted_expression else None
        )
        self._payload_templates: dict[str, Template] = {}

    def render(self, variables: dict[str, Any], where: str) -> Call:
        """The request for ``variables``.

        Raises:
            BadDataError: a template failed (names ``where``).
        """
        url = self.system.absolute(self.url.render(where, **variables).strip())
        params = {k: t.render(where, **variables) for k, t in self.params.items()}
        headers = {k: t.render(where, **variables) for k, t in self.headers.items()}
        payload = None
        if self.op.payload is not None:
            payload = self._render_payload(self.op.payload, variables, where)
            if isinstance(self.op.payload, str) and (self.op.payload_type or "json") == "json":
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise BadDataError(f"payload template did not render JSON: {exc}", location=where) from exc
        return Call(self.method, url, params, headers, payload, self.op.payload_type or "json")

    def _render_payload(self, value: Any, variables: dict[str, Any], where: str) -> Any:
        if isinstance(value, str):
            template = self._payload_templates.get(value)
            if template is None:
                template = self._payload_templates[value] = Template(value, "payload")
            return template.render(where, **variables)
        if isinstance(value, dict):
            return {k: self._render_payload(v, variables, where) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_payload(v, variables, where) for v in value]
        return value

    def records(self, response: Response, body: Any) -> list[dict[str, Any]]:
        """The records at ``payload_property`` of a parsed body.

        Raises:
            BadDataError: the property is missing, or the records are not objects.
        """
        path = self.op.payload_property
        data = dig(body, path)
        if data is None and path:
            keys = sorted(body)[:20] if isinstance(body, dict) else type(body).__name__
            raise BadDataError(
                f"payload_property {path!r} is not in the response (top level: {keys}); "
                "fix payload_property", location=response.location)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BadDataError(
                f"expected a list of objects at payload_property {path or '(body)'!r}, got "
                f"{type(data).__name__}", location=response.location)
        return data

    def entity(self, record: dict[str, Any], where: str, context: dict[str, Any] | None = None) -> Entity:
        """Give ``record`` its ``_id`` (and ``_updated``) in place and return it.

        Args:
            record: one record of a response.
            where: the request, for errors.
            context: more template variables beside the record's fields (a work unit's
                ``unit`` and ``unit_key``; they hide record fields of the same name).

        Raises:
            BadDataError: no ``_id`` (no ``id_expression`` and no string ``_id`` field) or a
                template failed.
        """
        variables = record if context is None else {**record, **context}
        if self.id_template is not None:
            eid = self.id_template.render(where, **variables)
            if not eid:
                raise BadDataError(f"id_expression gave an empty _id for record {_brief(record)}", location=where)
            record["_id"] = eid
        elif not isinstance(record.get("_id"), str) or not record["_id"]:
            raise BadDataError(
                f"record {_brief(record)} has no string _id; set id_expression on the operation",
                location=where)
        if self.updated_template is not None:
            record["_updated"] = since_value(self.updated_template.render(where, **variables))
        deleted = self.deleted_template
        if deleted is not None and deleted.render(where, **variables).strip().lower() == "true":
            record["_deleted"] = True
        return record


def since_value(text: str) -> Any:
    """A rendered ``updated_expression``: an integer literal becomes an int, else the string."""
    text = text.strip()
    return int(text) if _INT.match(text) else text


def _brief(record: dict[str, Any]) -> str:
    text = orjson.dumps(record).decode()
    return text if len(text) <= 120 else text[:117] + "..."
