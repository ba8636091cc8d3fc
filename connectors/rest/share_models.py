"""Config models of the share side of the REST connector: the ``rest`` sink (Sesam) with DIL's
egression with validation, and the outcome ledger keys the side-effecting ``rest`` transform
shares with it.

Keys follow Sesam's REST sink and ``transform-share-rest`` template where the concept is Sesam's
(``operation``, ``properties``, ``payload``, ``primary_key``, the ``insert``/``update``/
``delete``/``lookup`` operations), DIL's where it is DIL's (``max_error_ratio`` after
``min_attempts``, the response dataset), the IETF draft's for ``Idempotency-Key``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from connectors.rest.ledger_models import SideEffectConfig
from connectors.rest.models import _Call
from runtime.components import ComponentConfig
from runtime.templates import check_template


class GateConfig(ComponentConfig):
    """The error-ratio gate's keys (DIL).

    Attributes:
        max_error_ratio: once ``min_attempts`` sends were made in a run and rejected /
            attempted passes this ratio (0..1), no more is sent and the run fails (DIL's
            ``InFlowValidationConverter`` threshold, applied while sending).
        min_attempts: sends before the gate is evaluated.
    """

    max_error_ratio: float = Field(default=0.1, ge=0, le=1)
    min_attempts: int = Field(default=20, ge=1)


class RestSinkConfig(_Call, SideEffectConfig, GateConfig):
    """``{"type": "rest", "system": "crm", "operation": "create"}``: one request per entity (or
    per batch of entities), ``concurrency`` at once.

    The operation of an entity (Sesam): ``operation_expression`` if set, else the entity's own
    ``operation`` (a name of the system's operations), else by the entity's state when
    ``insert_operation``, ``update_operation`` or ``delete_operation`` is set (``_deleted``:
    delete; a non-empty ``primary_key`` property: update; else insert), else ``operation`` and
    the inline keys. The payload: the entity's ``payload`` property, else the operation's
    ``payload`` template, else the entity without its ``_`` and ``$`` properties; none for a
    DELETE. Templates see ``entity`` and ``properties`` (the sink's, updated by the entity's
    ``properties``).

    Attributes:
        concurrency: requests in flight for this sink (the system's ``concurrency`` also
            applies).
        operation_expression: a template over ``entity`` giving the operation's name.
        insert_operation: operation for entities without a ``primary_key`` value.
        update_operation: operation for entities with one.
        delete_operation: operation for ``_deleted`` entities; a ``_deleted`` entity without a
            ``primary_key`` value is not sent (nothing to delete), nor one that is ``$replaced``
            (Sesam: a replacement is not a real delete).
        primary_key: the entity property holding the target's id.
        allowed_status_codes: statuses that count as sent; any other is a rejection (recorded,
            retried on later runs, see ``pump.max_retries_per_entity``).
        schema: a JSON Schema (draft 2020-12, the ``jsonschema`` library) every payload must
            match; a payload that does not is never sent, its error names the schema path.
        batch_size: entities per request to a batch endpoint (the operation receives a JSON list
            of payloads and answers 2xx for all or a 4xx for the batch); a rejected batch is split
            in halves until the rejected entities are found. Unset: one request per entity.
    """

    type: Literal["rest"]
    concurrency: int = Field(default=8, ge=1, le=1000)
    operation_expression: str | None = None
    insert_operation: str | None = None
    update_operation: str | None = None
    delete_operation: str | None = None
    primary_key: str = "id"
    allowed_status_codes: str = "200-299"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    batch_size: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("operation_expression")
    @classmethod
    def _operation_expression(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "operation_expression")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
            from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _batch(self) -> RestSinkConfig:
        per_entity = self.update_operation or self.delete_operation or self.operation_expression
        if self.batch_size is not None and per_entity:
            raise ValueError("batch_size sends one operation for every entity; drop update_operation, "
                             "delete_operation and operation_expression (use separate pipes)")
        return self

    def operation_names(self) -> list[tuple[str, str]]:
        """(key, operation name) of every named operation the sink may call."""
        keys = ("operation", "insert_operation", "update_operation", "delete_operation", "lookup_operation")
        return [(k, getattr(self, k)) for k in keys if getattr(self, k)]

    def system_problems(self, system_id: str, system: Any) -> list[tuple[str, str]]:
        """The system must be a ``system:rest`` having every operation the sink names."""
        from connectors.rest.models import RestSystemConfig
        if not isinstance(system, RestSystemConfig):
            return [("system", f"system {system_id!r} is a {system.type}; the rest sink needs a system:rest")]
        known = ", ".join(sorted(system.operations)) or "none"
        return [(key, f"system {system_id!r} has no operation {name!r}; known: {known}")
                for key, name in self.operation_names() if name not in system.operations]
