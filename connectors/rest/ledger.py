"""The outcome ledger of a component that sends with side effects (the ``rest`` sink, the
side-effecting ``rest`` transform): one entity per entity sent, in a dataset of the state store
(the *response dataset*, DIL), a new version per change of its outcome.

An outcome is committed on its own, not with the batch around it: :meth:`Ledger.record` returns
once the outcome is durable, while other requests of the batch are still in flight;
:meth:`Ledger.record_soon` commits a final outcome in the background while its sender goes on
(the pipe's checkpoint waits for :meth:`Ledger.drain`): one flusher task gathers the outcomes
arriving within :data:`LINGER_S` and commits them together. Concurrent callers share transactions
(group commit: whoever takes the store's turn writes every outcome waiting, so N requests in
flight cost far fewer than N transactions).

Before a non-idempotent request is sent its ``sending`` outcome is committed; an entity whose
latest outcome is still ``sending`` at the start of a later run was sent by a process that died
before it learnt the result (or the response was lost): its outcome is *unknown*.

Hashes (:func:`payload_hash`, :func:`idempotency_key`) are BLAKE2b over canonical JSON (orjson,
sorted keys), 32 hex characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from runtime.dtl.joinkeys import join_keys
from runtime.entities import Entity
from runtime.errors import StoreError
from runtime.store.protocol import StateStore

SENT, FAILED, SENDING, UNKNOWN, INVALID, CONFLICT = (
    "sent", "failed", "sending", "unknown", "invalid", "modified-in-system")
EXCERPT = 500  # characters of an error or response body kept in the ledger
#: seconds a background outcome waits for others to share its transaction (about one request's
#: latency; at 2,500 outcomes/s a transaction then holds about 50; bench/rest_share.py: 10 ms
#: gave 28 per transaction, 50 ms 63-69 and 7 % less CPU per send)
LINGER_S = 0.02
_ID = ("_id",)


def digest(*parts: Any) -> str:
    """BLAKE2b-128 hex of the canonical JSON of ``parts``."""
    return hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str), digest_size=16).hexdigest()


def payload_hash(operation: str, method: str, url: str, payload: Any) -> str:
    """The hash of what a request would change: operation, method, URL and payload."""
    return digest(operation, method, url, payload)


def idempotency_key(pipe: str, entity_id: str, payload: str) -> str:
    """The deterministic ``Idempotency-Key`` of a send: a hash of pipe, ``_id`` and payload hash
    (the same send always has the same key; a changed payload has a new one)."""
    return digest("idempotency", pipe, entity_id, payload)


def excerpt(text: str | bytes, limit: int = EXCERPT) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Outcome:
    """One entity's latest outcome (a version of the ledger entity).

    Attributes:
        entity_id: the entity's ``_id`` (the ledger entity's ``_id``).
        state: ``sending``, ``sent``, ``failed``, ``unknown``, ``invalid`` or
            ``modified-in-system``.
        operation: the operation's name (``""`` for inline keys).
        payload_hash: see :func:`payload_hash`.
        attempt: sends of this payload so far (1 for the first).
        status: the HTTP status, None without a response.
        error: an excerpt of the error, None when sent.
        generated_id: the target's id of the record (an insert's response, a lookup), if known.
        response: ``{"status", "body"}`` (body: the parsed JSON when small, else an excerpt)
            and ``"errors"`` of a 4xx validation body.
        run_id: the run that recorded it.
        at_us: when, microseconds since the epoch.
        collected_hash: with optimistic locking, the state hash (decimal) of the last collected
            version the update was compared with.
    """

    entity_id: str
    state: str
    operation: str
    payload_hash: str
    attempt: int = 1
    status: int | None = None
    error: str | None = None
    generated_id: Any = None
    response: dict[str, Any] | None = None
    run_id: str = ""
    at_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    collected_hash: str | None = None

    def entity(self) -> Entity:
        """The ledger entity; with a generated id also Sesam's ``$generated_id`` and ``$origin``
        (the originating ``_id``: the collect pipe hops from a collected record to it, see
        "Establish origin" in sesam.md §8)."""
        out = {k: v for k, v in self.__dict__.items() if k != "entity_id"}
        out["_id"] = self.entity_id
        if self.generated_id is not None:
            out["$generated_id"] = self.generated_id
            out["$origin"] = self.entity_id
        return out

    @classmethod
    def of(cls, entity: Entity) -> Outcome:
        return cls(entity["_id"], **{k: entity.get(k) for k in (  # type: ignore[arg-type]
            "state", "operation", "payload_hash", "attempt", "status", "error", "generated_id", "response",
            "run_id", "at_us", "collected_hash")})


class Ledger:
    """The outcome ledger of one component in one run.

    Args:
        store: the state store.
        dataset: the ledger (response) dataset.
        pipe: the pipe ``_id`` (the dataset's writer is ``<pipe>#responses``).
        keep_versions: versions kept per entity (the pipe's ``compaction.keep_versions``).
    """

    def __init__(self, store: StateStore, dataset: str, pipe: str, keep_versions: int | None) -> None:
        self.store, self.dataset, self.pipe, self.keep_versions = store, dataset, pipe, keep_versions
        self.latest: dict[str, Outcome] = {}  # outcomes read or recorded in this run
        self._buffer: list[Entity] = []
        self._queued = 0
        self._flushed = 0
        self._lock = anyio.Lock()
        self._indexed = False
        self._failure: BaseException | None = None
        self._flusher: asyncio.Future[None] | None = None
        self._now = asyncio.Event()  # set by drain(): the flusher stops lingering

    async def load(self, ids: list[str]) -> dict[str, Outcome]:
        """The latest committed outcome of each of ``ids`` that has one (one batched query)."""
        missing = [i for i in ids if i not in self.latest]
        if missing:
            if not self._indexed:
                self._indexed = await self.store.ensure_index(self.dataset, _ID)
            if self._indexed:
                keys = {k: i for i in missing for k in join_keys(i)}
                found = await self.store.index_lookup(self.dataset, _ID, list(keys))
                for key, entities in found.items():
                    self.latest[keys[key]] = Outcome.of(entities[0])
        return {i: self.latest[i] for i in ids if i in self.latest}

    def record_soon(self, outcome: Outcome) -> None:
        """Commit ``outcome`` in the background, within about :data:`LINGER_S` (one flusher task
        gathers the outcomes arriving meanwhile into one transaction), so the sender goes on with
        its next request; :meth:`drain` waits for it."""
        self._queue(outcome)
        if self._flusher is None or self._flusher.done():
            self._now.clear()
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._now.wait(), LINGER_S)
        with contextlib.suppress(Exception):  # kept in _failure: drain() and every later record raise it
            while self._flushed < self._queued:
                await self._flush(self._queued)

    async def drain(self) -> None:
        """Wait until every outcome of :meth:`record_soon` is committed.

        Raises:
            StoreError: a commit failed.
        """
        self._now.set()
        with anyio.CancelScope(shield=True):
            while self._flusher is not None and not self._flusher.done():
                await asyncio.wait([self._flusher])
        if self._failure is not None:
            raise StoreError(f"outcome ledger {self.dataset!r}: a commit failed: {self._failure}") from self._failure

    async def mark_populated(self) -> None:
        """Mark the ledger dataset populated (a run of its pipe has completed), so pipes that
        hop to it (the share patterns' update and delete pipes, sesam.md §8) may run."""
        await self.drain()
        await self.store.write_batch(self.dataset, [], pipe=f"{self.pipe}#responses", checkpoint=None, populate=True)

    async def record(self, outcome: Outcome) -> None:
        """Commit ``outcome``; returns once it is durable (group commit, see the module).

        Raises:
            StoreError: the transaction failed (then every later record fails too).
        """
        await self._flush(self._queue(outcome))

    def _queue(self, outcome: Outcome) -> int:
        """Buffer ``outcome``; returns its ticket (committed once ``_flushed`` reaches it)."""
        self.latest[outcome.entity_id] = outcome
        self._buffer.append(outcome.entity())
        self._queued += 1
        return self._queued

    async def _flush(self, ticket: int) -> None:
        """Return once the outcome of ``ticket`` is committed, committing every buffered one if
        no one else does."""
        async with self._lock:
            if self._failure is not None:
                raise StoreError(f"outcome ledger {self.dataset!r}: an earlier commit failed: {self._failure}")
            if self._flushed >= ticket:
                return
            batch, self._buffer, upto = self._buffer, [], self._queued
            try:
                await self.store.write_batch(self.dataset, batch, pipe=f"{self.pipe}#responses", checkpoint=None,
                                             keep_versions=self.keep_versions)
            except BaseException as exc:
                self._failure = exc
                raise
            self._flushed = upto
