"""Sends with side effects, each entity's outcome committed in the ledger
(:mod:`connectors.rest.ledger`): shared by the ``rest`` sink and the side-effecting ``rest``
transform.

Per send (one entity, :meth:`Sender.send`):

1. An entity whose latest outcome is ``sent`` with the same payload hash is not sent again.
2. An entity whose outcome is *unknown* (``sending`` left by a process that died, or ``unknown``
   after a lost response) is looked up first with ``lookup_operation`` when the target does not
   honour idempotency keys: found means applied (recorded ``sent`` with the id found), nothing is
   sent twice.
3. A non-idempotent send (POST, PATCH) carries the deterministic idempotency key
   (:func:`~connectors.rest.ledger.idempotency_key`). An insert that a later run would look up
   (``lookup_operation`` set, keys not honoured) commits ``sending`` first, so a process killed
   before its outcome leaves it *unknown*; any other send commits one outcome only (after a crash
   it has none and is sent again: with honoured keys the target replays it, else at least once).
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
    CONFLICT,
    EXCERPT,
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
from connectors.rest.locking import Locking
from connectors.rest.operation import Operation
from connectors.rest.paging import dig
from connectors.rest.retry import NON_IDEMPOTENT
from connectors.rest.system import Call, Response, RestSystem
from runtime.entities import Entity
from runtime.errors import BadDataError, ConfigError, ConfigProblem, EntityError, TransientError

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
        collected_hash: with optimistic locking, the state hash of the last collected version
            (:func:`~connectors.rest.locking.collected_hash`).
    """

    entity: Entity
    operation: str
    call: Call
    payload_hash: str
    kind: str
    target_id: Any = None
    collected_hash: str | None = None
    previous: Outcome | None = field(default=None, repr=False)

    @property
    def entity_id(self) -> str:
        return str(self.entity["_id"])


def fill_payload(call: Call, entity: Entity) -> None:
    """The payload of a send (Sesam's REST sink): the entity's ``payload`` property, else the
    operation's ``payload`` template (already in ``call``), else the entity without its ``_`` and
    ``$`` properties (and ``operation``, ``properties``); none for a DELETE."""
    if "payload" in entity:
        call.payload = entity["payload"]
    elif call.payload is None and call.method != "DELETE":
        call.payload = {k: v for k, v in entity.items()
                        if k[:1] not in ("_", "$") and k not in ("operation", "properties")}


def kind_of(method: str) -> str:
    return {"POST": "insert", "DELETE": "delete"}.get(method, "update")


def response_record(response: Response, whole: bool = False) -> dict[str, Any]:
    """What the ledger keeps of a response: status, body (parsed when short JSON, else an excerpt)
    and, for a 4xx with an ``errors`` list, those validation errors. ``whole``: the whole body
    (JSON parsed, else text) and the headers, for a transform that rebuilds its output from the
    ledger (:mod:`connectors.rest.capture`)."""
    body: Any = None
    if response.body:
        limit = len(response.body) if whole else EXCERPT
        try:
            body = orjson.loads(response.body) if whole or len(response.body) <= BODY_KEPT else excerpt(response.body)
        except orjson.JSONDecodeError:
            body = excerpt(response.body, limit)
    out: dict[str, Any] = {"status": response.status, "body": body}
    if whole:
        out["headers"] = {str(k): v for k, v in response.headers.items()}
    if 400 <= response.status < 500 and isinstance(body, dict) and isinstance(body.get("errors"), list):
        out["errors"] = body["errors"]
    return out


class Sender:
    """Ledger-aware sends of one component in one run.

    Args:
        system: the open REST system.
        ledger: the outcome ledger.
        gate: the run's error-ratio gate; None: sends are not counted (the ``rest`` transform).
        config: the component's config (its :class:`~connectors.rest.ledger_models.SideEffectConfig`
            keys and ``properties``).
        pipe: the pipe ``_id``.
        run_id: the run.
        allowed: statuses that count as sent.
        lookup: the compiled ``lookup_operation``, or None.
        locking: optimistic locking of updates (:mod:`connectors.rest.locking`), or None.
        whole_responses: keep each response whole in the ledger (see :func:`response_record`).
    """

    def __init__(self, system: RestSystem, ledger: Ledger, gate: ErrorGate | None, config: Any, pipe: str,
                 run_id: str, allowed: frozenset[int], lookup: Operation | None, locking: Locking | None = None,
                 whole_responses: bool = False) -> None:
        self.system, self.ledger, self.gate, self.config = system, ledger, gate, config
        self.pipe, self.run_id, self.allowed, self.lookup = pipe, run_id, allowed, lookup
        self.locking, self.whole_responses = locking, whole_responses

    def done(self, plan: Plan) -> bool:
        """Whether the entity was already sent with this payload (nothing to do)."""
        prev = plan.previous
        return prev is not None and prev.state == SENT and prev.payload_hash == plan.payload_hash

    def inserted(self, plan: Plan) -> bool:
        """Whether ``plan`` is an insert of an entity the target already created (a ``sent``
        outcome with a generated id): it is never sent again, whatever its payload now (Sesam's
        first cause of duplicate inserts: reprocessing); its changes are the update pipe's. The
        ledger commits each outcome before the next batch is planned, so this reads the pipe's
        own writes."""
        prev = plan.previous
        if plan.kind != "insert" or prev is None or prev.state != SENT or prev.generated_id is None:
            return False
        if prev.payload_hash != plan.payload_hash:
            log.info("share.already_inserted", entity=plan.entity_id, generated_id=prev.generated_id)
        return True

    def held(self, plan: Plan) -> bool:
        """Whether the entity's update was discarded as ``modified-in-system`` against the same
        collected version: it waits for the next collect (nothing is sent nor looked up)."""
        prev = plan.previous
        return (prev is not None and prev.state == CONFLICT and prev.payload_hash == plan.payload_hash
                and prev.collected_hash == plan.collected_hash)

    def _count(self, outcome: Outcome) -> None:
        """Count a final outcome in the gate: a rejection is a refusal of the data (a 4xx other
        than a 412 conflict, a failed look-up, an unknown operation); a transient failure (429,
        5xx or no response, after the system's ``retry_strategy``) is not counted at all: it
        says nothing about the data, and the entity is retried on a later run."""
        if self.gate is None:
            return
        if outcome.state in (UNKNOWN, FAILED) and (outcome.status is None or outcome.status == 429
                                                   or outcome.status >= 500):
            return
        self.gate.count(outcome.state not in (SENT, CONFLICT))

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
        if self.locking is not None and plan.kind == "update":
            verdict = await self.locking.check(plan.entity, plan.collected_hash)
            if verdict.conflict is not None or verdict.failure is not None:
                state = CONFLICT if verdict.conflict is not None else FAILED
                return await self._final(self._outcome(
                    plan, state, attempt, verdict.status, verdict.conflict or verdict.failure, None,
                    {"status": verdict.status, "lookup": True, "current_hash": verdict.current_hash}), attempt)
            if verdict.applied(call.method, call.payload):  # nothing to change: not sent
                return await self._final(self._outcome(plan, SENT, attempt, verdict.status, None, None, {
                    "status": verdict.status, "lookup": True, "unchanged": True}), attempt)
            if verdict.etag:
                call.headers["If-Match"] = verdict.etag
        non_idempotent = call.method in NON_IDEMPOTENT
        if non_idempotent:
            if plan.kind == "insert" and self.lookup is not None and not self.config.idempotency_key_honoured:
                await self.ledger.record(self._outcome(plan, SENDING, attempt))  # a crash leaves it unknown
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
        return await self._final(outcome, attempt)

    async def _final(self, outcome: Outcome, attempt: int) -> Outcome:
        """Commit a send's final outcome (in the background, see :meth:`Ledger.record_soon`),
        count it and log what was not sent.

        Raises:
            ConfigError: the target answered 428 (it requires ``If-Match``).
        """
        self.ledger.record_soon(outcome)  # committed while the next request goes (the sink drains it)
        if outcome.status == 428:
            raise ConfigError([ConfigProblem("<config>", self.pipe, "optimistic_locking", (
                f"system {self.system.id!r} answered 428 Precondition Required to the update of entity "
                f"{outcome.entity_id!r}: it requires If-Match; set the sink's optimistic_locking (an operation "
                "reading the record, whose ETag becomes the If-Match)"))])
        self._count(outcome)
        if outcome.state == CONFLICT:
            log.warning("share.modified_in_system", entity=outcome.entity_id, status=outcome.status,
                        error=outcome.error)
        elif outcome.state != SENT:
            log.warning("share.rejected", entity=outcome.entity_id, state=outcome.state, status=outcome.status,
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
            self._count(o)
        return outcomes

    def _answered(self, plan: Plan, response: Response, attempt: int) -> Outcome:
        record = response_record(response, self.whole_responses)
        if response.status in self.allowed or (response.status == 404 and plan.call.method == "DELETE"):
            # a DELETE answered 404: the record is gone (deleted by an earlier try whose response was lost)
            body = record["body"] if isinstance(record["body"], dict) else None
            return self._outcome(plan, SENT, attempt, response.status, None,
                                 _generated(body, self.config, plan), record)
        error = f"HTTP {response.status} from {response.location}: {excerpt(response.body, 300)}"
        if response.status == 412 and "If-Match" in plan.call.headers:  # changed between the read and the write
            return self._outcome(plan, CONFLICT, attempt, 412, f"modified-in-system: {error}", None, record)
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
        found: dict[str, Any] = {"status": response.status, "lookup": True}
        if self.whole_responses:  # the record found stands for the lost response (capture response)
            found["body"] = records[0]
        outcome = self._outcome(plan, SENT, self._attempt(plan) - 1 or 1, response.status, None,
                                _generated(records[0], self.config, plan), found)
        await self.ledger.record(outcome)
        log.info("share.found_by_lookup", entity=plan.entity_id, generated_id=outcome.generated_id)
        return outcome

    def _outcome(self, plan: Plan, state: str, attempt: int, status: int | None = None, error: str | None = None,
                 generated: Any = None, response: dict[str, Any] | None = None) -> Outcome:
        if generated is None and plan.previous is not None:
            generated = plan.previous.generated_id
        return Outcome(plan.entity_id, state, plan.operation, plan.payload_hash, attempt, status, error,
                       generated, response, self.run_id, collected_hash=plan.collected_hash)


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
