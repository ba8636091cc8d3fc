"""The ``rest`` transform (Sesam): one operation call per entity, ``concurrency`` calls at once,
output in input order.

Per entity (sesam.md §4 "REST transform"): the templates see ``entity`` and ``properties``; the
status decides: ``allowed_status_codes`` (default 2xx) keeps the entity, ``ignored_status_codes``
drops it, anything else fails the run naming the request. The parsed response goes into
``response_property`` (status and headers optionally into their own properties), or with
``replace_entity`` the response's records (at ``payload_property``, each needing an ``_id`` or an
``id_expression``) replace the entity. ``if_transform_empty: fail`` fails the run when a
non-empty batch produced no entity, so an outage cannot feed deletion tracking an empty result.
``_deleted`` entities pass through without a request unless ``call_deleted`` is set.
Every call is retried on its own by the system (5xx, 429, resets, a 2xx body that does not parse,
a 401 needing a new token), so one flaky call does not fail the batch around it.

With ``side_effects: true`` (capture response with transform) every call goes through the outcome
ledger, committed per entity while the others are in flight: :mod:`connectors.rest.capture`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from connectors.rest.body import content, parse_body
from connectors.rest.capture import Capture
from connectors.rest.models import RestTransformConfig, parse_codes
from connectors.rest.operation import Operation
from connectors.rest.sink import response_dataset
from connectors.rest.source import rest_system
from runtime.actors import run_workers
from runtime.components import ComponentConfig, Transform
from runtime.entities import Entity
from runtime.errors import SourceEmptyError


class RestTransform(Transform):
    """Calls a REST operation per entity, ``concurrency`` at once, output in input order."""

    Config: ClassVar[type[ComponentConfig]] = RestTransformConfig
    config: RestTransformConfig

    @classmethod
    def side_effects(cls, config: Any) -> bool:
        return bool(config.side_effects)

    @classmethod
    def ledgers(cls, config: Any, pipe: str) -> list[str]:
        """The outcome ledger, with ``side_effects``."""
        return [response_dataset(config, pipe)] if config.side_effects else []

    async def open(self) -> None:
        c = self.config
        self.system = rest_system(self.context, "transform")
        self.operation = Operation(self.system, c, self.context.pipe)
        self.allowed = parse_codes(c.allowed_status_codes)
        self.ignored = parse_codes(c.ignored_status_codes) if c.ignored_status_codes else frozenset()
        self.capture = (Capture(self.system, self.operation, c, self.context, self.allowed, self.ignored)
                        if c.side_effects else None)

    async def transform(self, entities: list[Entity]) -> list[Entity]:
        capture = self.capture
        results = await (self._captured(capture, entities) if capture is not None else self._called(entities))
        out = [e for group in results for e in group]
        if entities and not out and self.config.if_transform_empty == "fail":
            raise SourceEmptyError(
                f"rest transform produced no entities from a batch of {len(entities)} and "
                "if_transform_empty is 'fail'; nothing of this batch was written. Check the system, "
                "then run again", pipe=self.context.pipe)
        return out

    async def _called(self, entities: list[Entity]) -> list[list[Entity]]:
        results: list[list[Entity]] = [[] for _ in entities]
        todo = iter(enumerate(entities))

        async def worker() -> None:
            # ``concurrency`` workers share one iterator: no task, limiter or scope per entity
            for i, entity in todo:
                results[i] = await self._call(entity)

        await run_workers(worker, min(self.config.concurrency, len(entities)))
        return results

    async def _captured(self, capture: Capture, entities: list[Entity]) -> list[list[Entity]]:
        """Calls through the outcome ledger (:mod:`connectors.rest.capture`), each planned as a
        worker takes it (the first calls go while the rest of the batch is planned)."""
        previous = await capture.previous(entities)
        results: list[list[Entity]] = [[e] for e in entities]  # a _deleted entity passes through
        outcomes = []
        todo = iter(enumerate(entities))

        async def worker() -> None:
            for i, entity in todo:
                plan = capture.plan(entity, previous)
                if plan is not None:
                    outcome = await capture.call(plan)
                    outcomes.append(outcome)
                    results[i] = capture.output(entity, outcome)

        try:
            await run_workers(worker, min(self.config.concurrency, len(entities)))
        finally:
            await capture.ledger.drain()  # every outcome committed, also when a call raised
        capture.check(outcomes)
        return results

    async def _call(self, entity: Entity) -> list[Entity]:
        c = self.config
        if entity.get("_deleted") is True and not c.call_deleted:
            return [entity]
        where = f"pipe {self.context.pipe!r} rest transform, entity {entity.get('_id')!r}"
        call = self.operation.render({"entity": entity, "properties": c.properties}, where)
        parse = parse_body if c.replace_entity else content
        response = await self.system.send(call, parse=parse)  # a 2xx body is parsed (and retried)
        if response.status in self.ignored:
            return []
        if response.status not in self.allowed:
            self.system.check(response, self.allowed)
        data = response.data if 200 <= response.status < 300 else parse(response)
        if c.replace_entity:
            records = self.operation.records(response, data)
            return [self.operation.entity(r, response.location) for r in records]
        out = dict(entity)
        out[c.response_property] = data
        if c.response_status_property:
            out[c.response_status_property] = response.status
        if c.response_headers_property:
            out[c.response_headers_property] = {str(k): v for k, v in response.headers.items()}
        return [out]
