"""Capture response with transform (seeds 001/002, sesam.md §8): the ``rest`` transform with
``side_effects: true``, whose responses land in the pipe's sink dataset.

Sesam asks such a pipe for ``batch_size: 1`` (a failed batch would call its entities again) and
for durability. Here the outcome ledger of the ``rest`` sink (:mod:`connectors.rest.ledger`,
:class:`~connectors.rest.sender.Sender`) gives the same per-entity commit while ``concurrency``
calls are in flight: each call's outcome and whole response (status, body, headers) commit on
their own; an entity already ``sent`` with the same payload hash, or a POST whose record the
target created (a generated id), is not sent again, and its output is rebuilt from the ledger. So
a run that fails or is killed after some calls re-sends none of them, and the sink dataset gets
their responses from the re-run. A lost response is handled as by the sink: retried with an
honoured ``Idempotency-Key``, else looked up with ``lookup_operation`` before any re-send; the
record a look-up finds stands for the lost response (``response_property``; the status is the
look-up's).

A call whose outcome is not ``sent`` (a status outside ``allowed_status_codes`` and
``ignored_status_codes``, or no response) is recorded, the other calls of the batch finish, and
the run fails naming the entity: a 429, a 5xx or no response as a
:class:`~runtime.errors.TransientError`, any other status as a
:class:`~runtime.errors.FatalError`; the next run sends it again (after a look-up if unknown).
"""

from __future__ import annotations

from connectors.rest.ledger import SENT, Ledger, Outcome, payload_hash
from connectors.rest.models import RestTransformConfig
from connectors.rest.operation import Operation
from connectors.rest.sender import Plan, Sender, fill_payload, kind_of
from connectors.rest.sink import response_dataset
from connectors.rest.system import RestSystem
from runtime.components import ComponentContext
from runtime.entities import Entity
from runtime.errors import BadDataError, FatalError, SluiceError, TransientError


class Capture:
    """The ledger-backed calls of one side-effecting ``rest`` transform in one run.

    Args:
        system: the open REST system.
        operation: the transform's compiled operation.
        config: the transform's config.
        context: the transform's context (store, pipe, run).
        allowed: statuses that keep the entity.
        ignored: statuses that drop it.
    """

    def __init__(self, system: RestSystem, operation: Operation, config: RestTransformConfig,
                 context: ComponentContext, allowed: frozenset[int], ignored: frozenset[int]) -> None:
        self.operation, self.config, self.pipe, self.ignored = operation, config, context.pipe, ignored
        self.ledger = Ledger(context.store, response_dataset(config, context.pipe), context.pipe,
                             context.keep_versions)
        lookup = None
        if config.lookup_operation:
            lookup = Operation(system, config.model_copy(update={"operation": config.lookup_operation}), context.pipe)
        self.sender = Sender(system, self.ledger, None, config, context.pipe, context.run.run_id, allowed | ignored,
                             lookup, whole_responses=True)

    async def previous(self, entities: list[Entity]) -> dict[str, Outcome]:
        """The latest outcome of each entity that has one (one query for the batch)."""
        return await self.ledger.load([e["_id"] for e in entities if isinstance(e.get("_id"), str)])

    def plan(self, entity: Entity, previous: dict[str, Outcome]) -> Plan | None:
        """The call of ``entity`` with its latest outcome (from :meth:`previous`); None for a
        ``_deleted`` one, passed through without a call.

        Raises:
            BadDataError: the entity has no string ``_id``, or a template failed.
        """
        c = self.config
        if entity.get("_deleted") is True and not c.call_deleted:
            return None
        eid = entity.get("_id")
        where = f"pipe {self.pipe!r} rest transform, entity {eid!r}"
        if not isinstance(eid, str):
            raise BadDataError("an entity without a string _id cannot be sent with side_effects (the outcome "
                               f"ledger is keyed by _id): {str(entity)[:200]}", location=where, pipe=self.pipe)
        call = self.operation.render({"entity": entity, "properties": c.properties}, where)
        fill_payload(call, entity)
        name = c.operation or ""
        return Plan(entity, name, call, payload_hash(name, call.method, call.url, call.payload),
                    kind_of(call.method), previous=previous.get(eid))

    async def call(self, plan: Plan) -> Outcome:
        """The entity's outcome: the previous one when it needs no call, else the new one."""
        if plan.previous is not None and (self.sender.done(plan) or self.sender.inserted(plan)):
            return plan.previous
        return await self.sender.send(plan)

    def output(self, entity: Entity, outcome: Outcome) -> list[Entity]:
        """The entity with its response (as the ``rest`` transform without side effects gives
        it), or nothing for an ignored status."""
        if outcome.status in self.ignored:
            return []
        c, record = self.config, outcome.response or {}
        out = dict(entity)
        out[c.response_property] = record.get("body")
        if c.response_status_property:
            out[c.response_status_property] = outcome.status
        if c.response_headers_property:
            out[c.response_headers_property] = record.get("headers", {})
        return [out]

    def check(self, outcomes: list[Outcome]) -> None:
        """Raise for the first outcome that is not ``sent`` (all are committed by then).

        Raises:
            TransientError: 429, 5xx or no response.
            FatalError: any other status.
        """
        failed = [o for o in outcomes if o.state != SENT]
        if not failed:
            return
        first = failed[0]
        message = (f"{len(failed)} of {len(outcomes)} calls were not sent; entity {first.entity_id!r} "
                   f"{first.state} (attempt {first.attempt}): {first.error}. Every outcome is in the ledger "
                   f"{self.ledger.dataset!r}; the next run sends these again and none of the others")
        error: type[SluiceError] = FatalError
        if first.status is None or first.status == 429 or first.status >= 500:
            error = TransientError
        raise error(message, pipe=self.pipe)

