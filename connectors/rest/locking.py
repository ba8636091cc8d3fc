"""Optimistic locking of the ``rest`` sink's updates (Sesam's share pattern, seeds 001/002).

Before an update, :meth:`Locking.check` reads the target's current record with the configured
operation and compares its state hash (:func:`runtime.entities.state_hash`: the fields not
starting with ``_`` or ``$``, MurmurHash3-128 of canonical JSON, the same integer as DTL's
``hash128`` over a dict) with the hash of the last version collected from the target, which the
pipe's DTL put on the entity with a hop to the collect dataset (``collected_property``). Equal:
the update goes (unless the record already holds the payload: then nothing is sent, Sesam's
optional no-op check), with ``If-Match`` set to the record's ``ETag`` when the response has one, so a
change between the read and the write is refused by the target (``412``). Different, ``404`` or
no collected version: the update is discarded as ``modified-in-system``; once the next collect
brings the target's new state, dependency tracking puts the entity through the pipe again with a
new collected hash, and the sink tries again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from connectors.rest.operation import Operation
from connectors.rest.paging import dig
from connectors.rest.share_models import OptimisticLockingConfig
from connectors.rest.system import Call, RestSystem
from runtime.entities import Entity, state_hash
from runtime.errors import BadDataError, TransientError


@dataclass
class Verdict:
    """What the look-up found.

    Attributes:
        conflict: why the update is discarded (``modified-in-system``), or None.
        failure: why the look-up itself failed (no answer, a status other than 2xx or 404), or
            None; the update is not sent and is retried like a failed send.
        status: the look-up's HTTP status, None without a response.
        etag: the current record's ``ETag``, sent as ``If-Match``.
        current_hash: the current record's state hash (decimal), None without one.
        record: the current record, None without one.
    """

    conflict: str | None = None
    failure: str | None = None
    status: int | None = None
    etag: str | None = None
    current_hash: str | None = None
    record: dict[str, Any] | None = None

    def applied(self, method: str, payload: Any) -> bool:
        """Whether the record already holds ``payload`` (a ``PUT``: the same state; a
        ``PATCH``: every key of the payload equal), so the update would change nothing."""
        if self.record is None or not isinstance(payload, dict):
            return False
        if method == "PATCH":
            return all(self.record.get(k) == v for k, v in payload.items())
        return state_hash(payload) == state_hash(self.record)


def collected_hash(entity: Entity, config: OptimisticLockingConfig) -> str | None:
    """The decimal state hash of the entity's last collected version, or None when it has none
    (no hop result: the record was never collected)."""
    value = entity.get(config.collected_property)
    if isinstance(value, list):  # a hop's result is a list: its one entity
        value = value[0] if len(value) == 1 else None
    if isinstance(value, dict):
        return str(state_hash(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isdigit():
        return value
    return None


class Locking:
    """The look-up before an update.

    Args:
        system: the open REST system.
        operation: the compiled look-up operation.
        properties: the sink's ``properties`` (templates see them).
        pipe: the pipe ``_id`` (for messages).
    """

    def __init__(self, system: RestSystem, operation: Operation, properties: dict[str, Any], pipe: str) -> None:
        self.system, self.operation, self.properties, self.pipe = system, operation, properties, pipe

    async def check(self, entity: Entity, expected: str | None) -> Verdict:
        """Read the target's record of ``entity`` and compare it with ``expected`` (the collected
        hash); see the module.

        Raises:
            BadDataError: the look-up's template failed.
        """
        where = f"pipe {self.pipe!r} optimistic locking, entity {entity.get('_id')!r}"
        call: Call = self.operation.render({"entity": entity, "properties": self.properties}, where)
        try:
            response = await self.system.send(call)
        except (TransientError, BadDataError) as exc:
            return Verdict(failure=f"the look-up of the current record failed: {exc}")
        if response.status == 404:
            return Verdict(conflict=f"modified-in-system: {response.location} answered 404 (the record is gone)",
                           status=404)
        if not 200 <= response.status < 300:
            return Verdict(failure=f"the look-up {response.location} answered HTTP {response.status}",
                           status=response.status)
        try:
            record = dig(orjson.loads(response.body), self.operation.op.payload_property)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, list):
            record = record[0] if len(record) == 1 else None
        if not isinstance(record, dict):
            return Verdict(failure=f"the look-up {response.location} returned no record", status=response.status)
        current = str(state_hash(record))
        etag = response.headers.get("ETag")
        if expected is None:
            return Verdict(conflict="modified-in-system: no collected version of the record to compare with "
                           "(collect the target first)", status=response.status, etag=etag, current_hash=current)
        if current != expected:
            return Verdict(conflict=f"modified-in-system: the target's record changed since the last collect "
                           f"(state hash {current}, collected {expected})", status=response.status, etag=etag,
                           current_hash=current)
        return Verdict(status=response.status, etag=etag, current_hash=current, record=record)
