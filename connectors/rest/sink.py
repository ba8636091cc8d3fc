"""The ``rest`` sink (Sesam's REST sink, with DIL's egression with validation): one request per
entity (or per batch of entities to a batch endpoint), ``concurrency`` at once, each entity's
outcome committed on its own in the outcome ledger (:mod:`connectors.rest.ledger`) while the
others are in flight; the pipe's checkpoint commits after every entity of the batch has an outcome.

Per batch: the entities' latest outcomes are read in one query; an entity already ``sent`` with
the same payload hash is not sent again (counted ``unchanged``); a payload that does not match
the ``schema`` is never sent (``invalid``, a permanent entity error: dead-lettered at once with a
dead-letter dataset); the others are sent (:class:`~connectors.rest.sender.Sender`). Entities not
sent end as entity errors: with ``pump.dead_letter_dataset`` they are retried on later runs, then
dead-lettered after ``pump.max_retries_per_entity`` (:mod:`runtime.deadletters`); without one
the run fails. The error-ratio gate (:mod:`connectors.rest.gate`) stops sending mid-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from connectors.rest.gate import ErrorGate
from connectors.rest.ledger import CONFLICT, INVALID, SENT, Ledger, Outcome, payload_hash
from connectors.rest.locking import Locking, collected_hash
from connectors.rest.models import parse_codes
from connectors.rest.operation import Operation
from connectors.rest.sender import Plan, Sender, entity_error, fill_payload, kind_of
from connectors.rest.share_models import RestSinkConfig
from connectors.rest.source import rest_system
from runtime.actors import run_workers
from runtime.components import ComponentConfig, Sink
from runtime.entities import Entity
from runtime.errors import EntityError
from runtime.store.protocol import Checkpoint, WriteResult
from runtime.templates import Template

_COUNTER = {"insert": "new", "update": "changed", "delete": "deleted"}


def response_dataset(config: Any, pipe: str) -> str:
    """The outcome ledger / response dataset of a component: its ``response_dataset`` or
    ``<pipe>-responses``."""
    return config.response_dataset or f"{pipe}-responses"


def schema_error(validator: Draft202012Validator, payload: Any) -> str | None:
    """The first (by path) schema violation of ``payload``, naming the schema path, or None."""
    errors = sorted(validator.iter_errors(payload), key=lambda e: (list(e.absolute_path), list(e.schema_path)))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
    schema_path = "/".join(str(p) for p in e.schema_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"payload does not match the schema at schema path {schema_path!r} (payload {where}): {e.message}{more}"


class RestSink(Sink):
    """Sends entities to a REST system with a per-entity outcome ledger; see the module."""

    Config: ClassVar[type[ComponentConfig]] = RestSinkConfig
    config: RestSinkConfig

    @classmethod
    def datasets_written(cls, config: Any, pipe: str) -> list[str]:
        return [response_dataset(config, pipe)]

    async def open(self) -> None:
        c, ctx = self.config, self.context
        self.system = rest_system(ctx, "sink")
        self._ops: dict[str, Operation] = {}
        self.allowed = parse_codes(c.allowed_status_codes)
        self.validator = Draft202012Validator(c.schema_) if c.schema_ is not None else None
        self.expression = Template(c.operation_expression, "operation_expression") if c.operation_expression else None
        self.ledger = Ledger(ctx.store, response_dataset(c, ctx.pipe), ctx.pipe, ctx.keep_versions)
        self.gate = ErrorGate(c.max_error_ratio, c.min_attempts, ctx.pipe)
        lookup = self._op(c.lookup_operation) if c.lookup_operation else None
        lock = c.optimistic_locking
        locking = Locking(self.system, self._op(lock.operation), c.properties, ctx.pipe) if lock else None
        self.sender = Sender(self.system, self.ledger, self.gate, c, ctx.pipe, ctx.run.run_id, self.allowed, lookup,
                             locking)
        self._uncounted: dict[str, str] = {}
        self.state_ops = bool(c.insert_operation or c.update_operation or c.delete_operation)

    def _op(self, name: str | None) -> Operation:
        key = name or ""
        if key not in self._ops:
            config = self.config.model_copy(update={"operation": name})
            self._ops[key] = Operation(self.system, config, self.context.pipe)
        return self._ops[key]

    async def write(self, entities: list[Entity]) -> WriteResult:
        return await self.write_batch(entities, None)

    async def finish(self, checkpoint: Checkpoint) -> WriteResult:
        """The final checkpoint, then the outcome ledger dataset marked populated."""
        result = await super().finish(checkpoint)
        await self.ledger.mark_populated()
        return result

    async def write_batch(self, entities: Any, checkpoint: Checkpoint | None) -> WriteResult:
        """Send the entities (see the module), then commit the checkpoint.

        Raises:
            EntityError: some entities were not sent (each has its outcome in the ledger; the
                pipe retries or dead-letters them).
            ErrorRatioError: the gate closed.
            StoreError: the ledger could not commit.
        """
        result = await self._send(list({e.get("_id"): e for e in entities}.values())) if entities else WriteResult()
        if checkpoint is not None:
            await self.context.store.save_checkpoint(self.context.pipe, checkpoint)
        return result

    async def _send(self, entities: list[Entity]) -> WriteResult:
        ids = [e["_id"] for e in entities if isinstance(e.get("_id"), str)]
        previous = await self.ledger.load(ids)
        counts = {"new": 0, "changed": 0, "deleted": 0, "unchanged": 0, "conflicted": 0}
        errors: list[EntityError] = []
        outcomes = await self._run(self._plans(entities, previous, counts, errors), len(entities))
        sent = [(p, o) for p, o in outcomes if o.state == SENT]
        errors += [entity_error(p, o, self.context.pipe) for p, o in outcomes if o.state not in (SENT, CONFLICT)]
        self.gate.check()
        if errors:  # the pipe writes the batch again entity by entity: sent ones are counted then
            self._uncounted.update((p.entity_id, p.kind) for p, _ in sent)
            raise errors[0]
        for plan, o in sent:
            counts["unchanged" if (o.response or {}).get("unchanged") else _COUNTER[plan.kind]] += 1
        counts["conflicted"] += sum(o.state == CONFLICT for _, o in outcomes)
        return WriteResult(counts["new"], counts["changed"], counts["deleted"], counts["unchanged"],
                           conflicted=counts["conflicted"])

    def _plans(self, entities: list[Entity], previous: dict[str, Outcome], counts: dict[str, int],
               errors: list[EntityError]) -> Iterator[Plan]:
        """The sends to make, planned as the workers take them (so the first requests go while
        the rest of the batch is planned); entities not sent are counted in ``counts`` or added
        to ``errors``."""
        for entity in entities:
            try:
                plan = self._plan(entity, previous)
            except EntityError as exc:
                errors.append(exc)
                continue
            if plan is not None and self.sender.held(plan):  # waits for the next collect
                counts["conflicted"] += 1
                continue
            if plan is None or self.sender.done(plan) or self.sender.inserted(plan):
                # sent by a call of this run that raised (its counts were lost): count it now
                counts[_COUNTER.get(self._uncounted.pop(str(entity["_id"]), ""), "unchanged")] += 1
                continue
            if plan.previous is not None and plan.previous.run_id == self.context.run.run_id \
                    and plan.previous.payload_hash == plan.payload_hash:
                errors.append(entity_error(plan, plan.previous, self.context.pipe))  # failed in this run
                errors[-1].permanent = plan.previous.state == INVALID
                continue
            invalid = schema_error(self.validator, plan.call.payload) if self.validator is not None else None
            if invalid is not None:
                self.ledger.record_soon(Outcome(plan.entity_id, INVALID, plan.operation, plan.payload_hash, 0,
                                                error=invalid, run_id=self.context.run.run_id))
                errors.append(EntityError(f"entity {plan.entity_id!r}: {invalid}; not sent", entity_id=plan.entity_id,
                                          pipe=self.context.pipe, permanent=True))
                continue
            yield plan

    async def _run(self, plans: Iterator[Plan], most: int) -> list[tuple[Plan, Outcome]]:
        """Send ``plans`` (at most ``most``), ``concurrency`` at once (each worker takes the next
        plan, or the next batch of ``batch_size`` plans), until done or the gate closes; every
        outcome is committed when it returns."""
        size = self.config.batch_size
        if size:
            planned = list(plans)
            groups: Iterator[list[Plan]] = iter([planned[i:i + size] for i in range(0, len(planned), size)])
            most = -(-len(planned) // size)
        else:
            groups = ([p] for p in plans)
        out: list[tuple[Plan, Outcome]] = []

        async def worker() -> None:
            for group in groups:
                if self.gate.closed:
                    return
                if size:
                    by_id = {p.entity_id: p for p in group}
                    out.extend((by_id[o.entity_id], o) for o in await self.sender.send_batch(group, self._op(
                        group[0].operation or None)))
                else:
                    out.append((group[0], await self.sender.send(group[0])))

        try:
            await run_workers(worker, min(self.config.concurrency, most))
        finally:
            await self.ledger.drain()  # every outcome committed before the checkpoint
        return out

    def _choose(self, entity: Entity) -> tuple[str | None, bool]:
        """(operation name or None for the inline keys, whether to send at all)."""
        c = self.config
        where = f"pipe {self.context.pipe!r} rest sink, entity {entity.get('_id')!r}"
        if self.expression is not None:
            return self.expression.render(where, entity=entity, properties=c.properties).strip(), True
        if isinstance(entity.get("operation"), str):
            return entity["operation"], True
        deleted = entity.get("_deleted") is True
        if not self.state_ops:
            return c.operation, not deleted
        has_key = entity.get(c.primary_key) not in (None, "")
        if deleted:
            return c.delete_operation, bool(c.delete_operation) and has_key and entity.get("$replaced") is not True
        if has_key:
            return c.update_operation, bool(c.update_operation)
        return c.insert_operation, bool(c.insert_operation)

    def _plan(self, entity: Entity, previous: dict[str, Outcome]) -> Plan | None:
        """The send of one entity, or None when it is not sent (see :class:`RestSinkConfig`).

        Raises:
            EntityError: no string ``_id``, an unknown operation, or a template failed.
        """
        eid = entity.get("_id")
        if not isinstance(eid, str):
            raise EntityError(f"an entity without a string _id cannot be sent: {str(entity)[:200]}",
                              entity_id=None, pipe=self.context.pipe)
        where = f"pipe {self.context.pipe!r} rest sink, entity {eid!r}"
        c = self.config
        try:
            name, send = self._choose(entity)
            if not send:
                return None
            if name and name not in self.system.config.operations:
                raise EntityError(f"{where}: operation {name!r} is not an operation of system "
                                  f"{self.system.id!r}", entity_id=eid, pipe=self.context.pipe)
            props = {**c.properties, **(entity["properties"] if isinstance(entity.get("properties"), dict) else {})}
            op = self._op(name)
            call = op.render({"entity": entity, "properties": props}, where)
        except EntityError:
            raise
        except Exception as exc:  # a template error: this entity only
            raise EntityError(f"{where}: {exc}", entity_id=eid, pipe=self.context.pipe) from exc
        fill_payload(call, entity)
        kind = kind_of(call.method)
        lock = c.optimistic_locking
        collected = collected_hash(entity, lock) if lock is not None and kind == "update" else None
        return Plan(entity, name or "", call, payload_hash(name or "", call.method, call.url, call.payload),
                    kind, entity.get(c.primary_key), collected, previous.get(eid))
