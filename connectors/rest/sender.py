"""Sends with side effects, each entity's outcome committed in the ledger
(:mod:`connectors.rest.ledger`): shared by the ``rest`` sink and the side-effecting ``rest``
transform.

Per send (one entity, :meth:`Sender.send`):

1. An entity whose latest outcome is ``sent`` with the same payload hash is not sent again.
2. An entity whose outcome is *unknown* (``sending`` left by a process that died, or ``unknown``
   after a lost response) is looked up first with ``lookup_operation`` when the target does not
   honour idempotency keys: found means applied (recorded ``sent`` with the id found), nothing is
   sent twice.
3. A non-idempotent send (POST, PATCH) commits ``sending`` first and carries the deterministic
   idempotency key (:func:`~connectors.rest.ledger.idempotency_key`).
4. The response decides: a status in ``allowed`` is ``sent`` (the generated id taken from the body),
   any other ``failed``; no response (connection lost, every attempt spent) ``unknown`` for a
   non-idempotent send, else ``failed``. Each is committed at once and counted by the
   :class:`~connectors.rest.gate.ErrorGate`.

A batch endpoint (:meth:`Sender.send_batch`) gets a JSON list of payloads; a 4xx for the batch is
split in halves until the rejected entities are found (Hightouch's split retries): one bad entity
among 64 costs at most 2·log2(64) + 1 = 13 requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from connectors.rest.gate import ErrorGate
from connectors.rest.ledger import (
    FAILED,
    SENDING,
    SENT,
    UNKNOWN,
    Ledger,
    Outcome,
    digest,
    excerpt,
    idempotency_key,
)
from connectors.rest.operation import Operation
from connectors.rest.paging import dig
from connectors.rest.retry import NON_IDEMPOTENT
from connectors.rest.system import Call, Response, RestSystem
from runtime.entities import Entity
from runtime.errors import BadDataError, EntityError, TransientError

log = structlog.get_logger("sluice.rest.share")

BODY_KEPT = 2000  # bytes of a response body kept parsed in the ledger; longer ones as an excerpt


@dataclass
class Plan:
    """One entity's send: the entity, its operation and the request.

    Attributes:
        entity: the entity.
        operation: the operation's name (``""`` for inline keys).
        call: the rendered request.
        payload_hash: see :func:`~connectors.rest.ledger.payload_hash`.
        kind: ``insert``, ``update`` or ``delete`` (from the method), for the pipe's counters.
        target_id: the target's id of the record when the entity has one (``primary_key``).
    """

    entity: Entity
    operation: str
    call: Call
    payload_hash: str
    kind: str
    target_id: Any = None
    previous: Outcome | None = field(default=None, repr=False)

    @property
    def entity_id(self) -> str:
        return str(self.entity["_id"])


def kind_of(method: str) -> str:
    return {"POST": "insert", "DELETE": "delete"}.get(method, "update")


def response_record(response: Response) -> dict[str, Any]:
    """What the ledger keeps of a response: status, body (parsed when short JSON, else an excerpt)
    and, for a 4xx with an ``errors`` list, those validation errors."""
    body: Any = None
    if response.body:
        try:
            body = orjson.loads(response.body) if len(response.body) <= BODY_KEPT else excerpt(response.body)
        except orjson.JSONDecodeError:
            body = excerpt(response.body)
    out: dict[str, Any] = {"status": response.status, "body": body}
    if 400 <= response.status < 500 and isinstance(body, dict) and isinstance(body.get("errors"), list):
        out["errors"] = body["errors"]
    return out


class Sender:
    """Ledger-aware sends of one component in one run.

    Args:
        system: the open REST system.
        ledger: the outcome ledger.
        gate: the run's error-ratio gate.
        config: the component's config (a :class:`~connectors.rest.share_models.LedgerConfig`).
        pipe: the pipe ``_id``.
        run_id: the run.
        allowed: statuses that count as sent.
        lookup: the compiled ``lookup_operation``, or None.
    """

    def __init__(self, system: RestSystem, ledger: Ledger, gate: ErrorGate, config: Any, pipe: str, run_id: str,
                 allowed: frozenset[int], lookup: Operation | None) -> None:
        self.system, self.ledger, self.gate, self.config = system, ledger, gate, config
        self.pipe, self.run_id, self.allowed, self.lookup = pipe, run_id, allowed, lookup

    def done(self, plan: Plan) -> bool:
        """Whether the entity was already sent with this payload (nothing to do)."""
        prev = plan.previous
        return prev is not None and prev.state == SENT and prev.payload_hash == plan.payload_hash

    def _attempt(self, plan: Plan) -> int:
        prev = plan.previous
        return prev.attempt + 1 if prev is not None and prev.payload_hash == plan.payload_hash else 1

    def _unknown(self, plan: Plan) -> bool:
        prev = plan.previous
        return prev is not None and prev.payload_hash == plan.payload_hash and prev.state in (SENDING, UNKNOWN)

    async def send(self, plan: Plan) -> Outcome:
        """Send one entity (see the module) and return its committed outcome.

        Raises:
            StoreError: the ledger could not commit.
            FatalError: the URL is invalid (the run fails).
        """
        attempt = self._attempt(plan)
        if self._unknown(plan) and plan.kind == "insert" and not self.config.idempotency_key_honoured:
            found = await self._look_up(plan)
            if found is not None:
                return found
        call = plan.call
        non_idempotent = call.method in NON_IDEMPOTENT
        if non_idempotent:
            await self.ledger.record(self._outcome(plan, SENDING, attempt))
            header = self.config.idempotency_key_header
            if header:
                call.headers[header] = idempotency_key(self.pipe, plan.entity_id, plan.payload_hash)
                if self.config.idempotency_key_honoured:
                    call.idempotent = True
        try:
            response = await self.system.send(call)
        except (TransientError, BadDataError) as exc:
            state = UNKNOWN if non_idempotent else FAILED
            outcome = self._outcome(plan, state, attempt, error=excerpt(str(exc)))
        else:
            outcome = self._answered(plan, response, attempt)
        await self.ledger.record(outcome)
        self.gate.count(outcome.state != SENT)
        if outcome.state != SENT:
            log.warning("share.rejected", entity=plan.entity_id, state=outcome.state, status=outcome.status,
                        attempt=attempt, error=outcome.error)
        return outcome

    async def send_batch(self, plans: list[Plan], operation: Operation) -> list[Outcome]:
        """Send ``plans`` to a batch endpoint in one request; split a rejected batch in halves.

        Raises:
            StoreError: the ledger could not commit.
        """
        todo = [p for p in plans if not self.done(p)]
        if not todo:
            return []
        attempts = {p.entity_id: self._attempt(p) for p in todo}
        for p in todo:
            await self.ledger.record(self._outcome(p, SENDING, attempts[p.entity_id]))
        return await self._batch(todo, operation, attempts)

    async def _batch(self, plans: list[Plan], operation: Operation, attempts: dict[str, int]) -> list[Outcome]:
        first = plans[0]
        call = Call(first.call.method, first.call.url, dict(first.call.params), dict(first.call.headers),
                    [p.call.payload for p in plans], first.call.payload_type)
        header = self.config.idempotency_key_header
        if header:
            call.headers[header] = idempotency_key(self.pipe, "batch", digest(*[p.payload_hash for p in plans]))
        try:
            response = await self.system.send(call)
        except (TransientError, BadDataError) as exc:
            return await self._settle([self._outcome(p, UNKNOWN, attempts[p.entity_id], error=excerpt(str(exc)))
                                       for p in plans])
        if response.status in self.allowed:
            records = _records(response, operation)
            return await self._settle([
                self._outcome(p, SENT, attempts[p.entity_id], response.status, None,
                              _generated(records[i] if i < len(records) else None, self.config, p),
                              {"status": response.status, "batch": len(plans)})
                for i, p in enumerate(plans)])
        if 400 <= response.status < 500 and len(plans) > 1:
            half = len(plans) // 2
            log.info("share.batch_split", entities=len(plans), status=response.status)
            return [*await self._batch(plans[:half], operation, attempts),
                    *await self._batch(plans[half:], operation, attempts)]
        return await self._settle([self._answered(p, response, attempts[p.entity_id]) for p in plans])

    async def _settle(self, outcomes: list[Outcome]) -> list[Outcome]:
        for o in outcomes:
            await self.ledger.record(o)
            self.gate.count(o.state != SENT)
        return outcomes

    def _answered(self, plan: Plan, response: Response, attempt: int) -> Outcome:
        record = response_record(response)
        if response.status in self.allowed:
            body = record["body"] if isinstance(record["body"], dict) else None
            return self._outcome(plan, SENT, attempt, response.status, None,
                                 _generated(body, self.config, plan), record)
        error = f"HTTP {response.status} from {response.location}: {excerpt(response.body, 300)}"
        return self._outcome(plan, FAILED, attempt, response.status, error, None, record)

    async def _look_up(self, plan: Plan) -> Outcome | None:
        """After an unknown outcome: the ``sent`` outcome when the target has the record, else
        None (then it is sent). Without ``lookup_operation`` it is sent again (at least once)."""
        if self.lookup is None:
            log.warning("share.resend_unknown", entity=plan.entity_id,
                        reason="the last send's outcome is unknown and no lookup_operation is set; sending again")
            return None
        where = f"pipe {self.pipe!r} lookup, entity {plan.entity_id!r}"
        call = self.lookup.render({"entity": plan.entity, "properties": self.config.properties}, where)
        response = await self.system.send(call)
        if response.status == 404:
            return None
        self.system.check(response)
        records = _records(response, self.lookup)
        if not records:
            return None
        outcome = self._outcome(plan, SENT, self._attempt(plan) - 1 or 1, response.status, None,
                                _generated(records[0], self.config, plan), {"status": response.status, "lookup": True})
        await self.ledger.record(outcome)
        log.info("share.found_by_lookup", entity=plan.entity_id, generated_id=outcome.generated_id)
        return outcome

    def _outcome(self, plan: Plan, state: str, attempt: int, status: int | None = None, error: str | None = None,
                 generated: Any = None, response: dict[str, Any] | None = None) -> Outcome:
        if generated is None and plan.previous is not None:
            generated = plan.previous.generated_id
        return Outcome(plan.entity_id, state, plan.operation, plan.payload_hash, attempt, status, error,
                       generated, response, self.run_id)


def _records(response: Response, operation: Operation) -> list[Any]:
    try:
        body = orjson.loads(response.body) if response.body else None
    except orjson.JSONDecodeError:
        return []
    data = dig(body, operation.op.payload_property)
    return data if isinstance(data, list) else [data] if isinstance(data, dict) else []


def _generated(body: Any, config: Any, plan: Plan) -> Any:
    value = dig(body, config.generated_id_property) if isinstance(body, dict) else None
    return value if value is not None else plan.target_id


def entity_error(plan: Plan, outcome: Outcome, pipe: str) -> EntityError:
    """The entity error of an outcome that is not ``sent`` (the pipe's dead-letter handling)."""
    return EntityError(f"entity {plan.entity_id!r} {outcome.state} (attempt {outcome.attempt}): {outcome.error}",
                       entity_id=plan.entity_id, pipe=pipe)
