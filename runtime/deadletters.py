"""Entities a sink keeps refusing: retries across runs, then a dead-letter dataset (Sesam's pump
keys ``max_retries_per_entity`` and ``dead_letter_dataset``).

Only with ``pump.dead_letter_dataset`` set (otherwise an entity error fails the run):

1. When a sink raises :class:`~runtime.errors.EntityError` for a batch, the batch is written again
   entity by entity; each entity that fails is recorded in the pipe's retry ledger and skipped,
   and the run goes on (its checkpoint advances).
2. At the start of every run the ledger's entities are written again first; success removes them.
3. A later successful write of the same ``_id`` removes its ledger entry (the newer version won).
4. An entity's failed attempts count at most once per run. At the end of a run that did not fail
   (:meth:`DeadLetters.settle`), an entry with ``max_retries_per_entity`` attempts that is *still
   failing* is written to the dead-letter dataset as ``{"_id": "<pipe>:<key>", "pipe", "key",
   "entity", "error", "attempts"}`` and leaves the ledger. Still failing: it failed in this run
   and was not superseded (3); an entry keyed by content hash (which no later version can
   supersede) only when the source sent it again, in that form, in this run.
   A *permanent* error (:attr:`~runtime.errors.EntityError.permanent`: retrying cannot help, e.g.
   a payload failing the pipe's JSON Schema) dead-letters the entity at once.
5. At the end of a complete full run, entries the source did not send again in their failing
   form expire: the source fixed or deleted the entity.

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
        self.failed: dict[str, tuple[Entity, str, int]] = {}  # this run: key -> entity, error, attempts
        self.sent: set[str] = set()  # keys of entities the source sent in this run that failed

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
        return await self.write_singly(sink, [entity for _, entity, *_ in waiting], replay=True)

    async def write_singly(self, sink: Sink, entities: list[Entity], *, replay: bool = False) -> WriteResult:
        """Write entities one by one; record each failure (``replay``: entities of the ledger,
        not sent by the source in this run)."""
        total = WriteResult()
        written: list[str] = []
        for entity in entities:
            key = entity_key(entity)
            try:
                r = await sink.write_batch([entity], None)
            except EntityError as exc:
                if exc.permanent:
                    await self._dead_letter(key, entity, str(exc), 1)
                    self.failed.pop(key, None)
                else:
                    await self._failed(key, entity, str(exc), replay)
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
            for k in done:
                self.failed.pop(k, None)
                self.sent.discard(k)

    async def settle(self, *, full: bool) -> None:
        """End of a run that did not fail: dead-letter exhausted entries that are still failing;
        after a complete full run (``full``), expire entries the source did not send again.

        Raises:
            StoreError: the store failed.
        """
        if full:
            expired = sorted(self.pending - self.sent)
            if expired:
                await self.store.clear_entity_retries(self.pipe, expired)
                self.pending.difference_update(expired)
                log.info("deadletters.expired", keys=expired)
        for key, (entity, error, attempts) in sorted(self.failed.items()):
            still = key in self.pending and (key in self.sent or not key.startswith("hash:"))
            if still and attempts >= self.max_retries:
                await self._dead_letter(key, entity, error, attempts)

    async def _failed(self, key: str, entity: Entity, error: str, replay: bool) -> None:
        attempts = await self.store.record_entity_failure(self.pipe, key, entity, error, self.run_id)
        self.pending.add(key)
        self.failed[key] = (entity, error, attempts)
        if not replay:
            self.sent.add(key)
        log.warning("entity.failed", key=key, attempts=attempts, error=error)

    async def _dead_letter(self, key: str, entity: Entity, error: str, attempts: int) -> None:
        letter: dict[str, Any] = {"_id": f"{self.pipe}:{key}", "pipe": self.pipe, "key": key,
                                  "entity": entity, "error": error, "attempts": attempts}
        assert self.dataset is not None  # only called when enabled
        await self.store.write_batch(self.dataset, [letter], pipe=f"{self.pipe}#dead-letters", checkpoint=None)
        await self.store.clear_entity_retries(self.pipe, [key])
        self.pending.discard(key)
        log.error("entity.dead_lettered", key=key, attempts=attempts, dataset=self.dataset)
