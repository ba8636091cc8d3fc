"""Entities a sink keeps refusing: retries across runs, then a dead-letter dataset (Sesam's pump
keys ``max_retries_per_entity`` and ``dead_letter_dataset``).

Only with ``pump.dead_letter_dataset`` set (otherwise an entity error fails the run):

1. When a sink raises :class:`~runtime.errors.EntityError` for a batch, the batch is written again
   entity by entity; each entity that fails is recorded in the pipe's retry ledger and skipped,
   and the run goes on (its checkpoint advances).
2. At the start of every run the ledger's entities are written again first; success removes them.
3. An entity's failed attempts count at most once per run. At ``max_retries_per_entity`` it is
   written to the dead-letter dataset as ``{"_id": "<pipe>:<key>", "pipe", "key", "entity",
   "error", "attempts"}`` and leaves the ledger.
4. A later successful write of the same ``_id`` removes its ledger entry (the newer version won).

Keys are the entity's ``_id``, or ``hash:<content hash>`` for an entity without a string ``_id``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import structlog

from runtime.components import Sink
from runtime.entities import Entity
from runtime.errors import EntityError
from runtime.store.protocol import StateStore, WriteResult

log = structlog.get_logger("sluice.deadletters")


def entity_key(entity: Entity) -> str:
    """The ledger key: ``_id``, or a content hash when the entity has no string ``_id``."""
    eid = entity.get("_id")
    if isinstance(eid, str):
        return eid
    digest = hashlib.blake2b(orjson.dumps(entity, default=repr, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return f"hash:{digest.hexdigest()}"


class DeadLetters:
    """Retry ledger and dead-letter writes of one pipe run.

    Args:
        pipe: pipe ``_id``.
        store: the state store.
        run_id: the run (attempts count once per run).
        dataset: the dead-letter dataset, or None (disabled: entity errors fail the run).
        max_retries: attempts before an entity is dead-lettered.
    """

    def __init__(self, pipe: str, store: StateStore, run_id: str, dataset: str | None, max_retries: int) -> None:
        self.pipe, self.store, self.run_id = pipe, store, run_id
        self.dataset, self.max_retries = dataset, max_retries
        self.pending: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.dataset is not None

    async def replay(self, sink: Sink) -> WriteResult:
        """Write the ledger's entities again (start of a run)."""
        waiting = await self.store.entity_retries(self.pipe)
        self.pending = {key for key, *_ in waiting}
        if not waiting:
            return WriteResult()
        log.info("deadletters.replay", entities=len(waiting))
        return await self.write_singly(sink, [entity for _, entity, *_ in waiting])

    async def write_singly(self, sink: Sink, entities: list[Entity]) -> WriteResult:
        """Write entities one by one; record each failure, dead-letter exhausted ones."""
        total = WriteResult()
        written: list[str] = []
        for entity in entities:
            key = entity_key(entity)
            try:
                r = await sink.write_batch([entity], None)
            except EntityError as exc:
                await self._failed(key, entity, str(exc))
                continue
            total = WriteResult(total.new + r.new, total.changed + r.changed, total.deleted + r.deleted,
                                total.unchanged + r.unchanged, total.tripped or r.tripped)
            written.append(key)
        await self.forget(written)
        return total

    async def forget(self, keys: list[str]) -> None:
        """Drop ledger entries for keys written successfully (cheap when the ledger is empty)."""
        if not self.pending:
            return
        done = [k for k in keys if k in self.pending]
        if done:
            await self.store.clear_entity_retries(self.pipe, done)
            self.pending.difference_update(done)

    async def _failed(self, key: str, entity: Entity, error: str) -> None:
        attempts = await self.store.record_entity_failure(self.pipe, key, entity, error, self.run_id)
        self.pending.add(key)
        log.warning("entity.failed", key=key, attempts=attempts, error=error)
        if attempts < self.max_retries:
            return
        letter: dict[str, Any] = {"_id": f"{self.pipe}:{key}", "pipe": self.pipe, "key": key,
                                  "entity": entity, "error": error, "attempts": attempts}
        assert self.dataset is not None  # only called when enabled
        await self.store.write_batch(self.dataset, [letter], pipe=f"{self.pipe}#dead-letters", checkpoint=None)
        await self.store.clear_entity_retries(self.pipe, [key])
        self.pending.discard(key)
        log.error("entity.dead_lettered", key=key, attempts=attempts, dataset=self.dataset)
