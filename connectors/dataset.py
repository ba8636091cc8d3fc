"""The ``dataset`` source and sink (Sesam).

Source: reads a dataset's log after since (an integer offset), latest versions only unless
``include_previous_versions``. Continuation flags are fixed: supports since, chronological,
comparable.

Sink: writes entities with hash dedupe (a write equal to the latest version is a no-op),
commits each batch together with the pipe's checkpoint, does deletion tracking after a complete
full run (unless ``deletion_tracking: false``), and applies the circuit breaker: all or nothing
for deletions, safe by default (``circuit_breaker_deletion_factor``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field

from runtime.components import ComponentConfig, Sink, Source, SourceConfig
from runtime.entities import Entity, PreparedBatch, prepare
from runtime.errors import PipeTrippedError
from runtime.store.protocol import Checkpoint, RunStart, WriteResult

log = structlog.get_logger("sluice.dataset")


class DatasetSourceConfig(SourceConfig):
    """``{"type": "dataset", "dataset": ID, "include_previous_versions": false}``.

    Attributes:
        dataset: the dataset to read; ``sluice check`` refuses one that no pipe of the config
            writes (naming the closest written one).
        include_previous_versions: emit every committed version, not only the latest per ``_id``
            (history).
    """

    type: Literal["dataset"]
    dataset: str = Field(min_length=1)
    include_previous_versions: bool = False


class DatasetSource(Source):
    """Reads a dataset incrementally; since is the offset (``_updated``) of the last entity read."""

    Config: ClassVar[type[ComponentConfig]] = DatasetSourceConfig
    supports_since = True
    tracks_dependencies = True
    is_chronological = True
    is_since_comparable = True
    config: DatasetSourceConfig

    @classmethod
    def datasets_read(cls, config: Any) -> list[str]:
        return [config.dataset]

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        """Committed versions after ``since``. On a full run over a dataset that does not exist
        or is not populated yet (its writer's first full run has not completed), what is there is
        read but the run ends incomplete (``stopped``): no deletion tracking follows, and the
        full run stays owed until the input is populated."""
        if self.context.run.full:
            info = await self.context.store.dataset_info(self.config.dataset)
            if info is None or not info.populated:
                log.warning("source.input_not_populated", dataset=self.config.dataset,
                            exists=info is not None,
                            reason="no deletion tracking until a run of its writer has completed")
                self.complete = False
        async for chunk in self._pages(since, self.context.store.read):
            yield chunk

    def read_json(self, since: Any) -> AsyncIterator[list[bytes]]:
        """The chunks of :meth:`read`, each entity as its stored JSON bytes (publishers)."""
        return self._pages(since, self.context.store.read_bodies)

    async def _pages(self, since: Any, fetch: Any) -> AsyncIterator[list[Any]]:
        position = since
        while True:
            items, end = await fetch(
                self.config.dataset, since=position, limit=self.context.run.batch_size,
                history=self.config.include_previous_versions,
            )
            if items:
                yield items
            if end is None or end == position:
                return
            position = end


class DatasetSinkConfig(ComponentConfig):
    """``{"type": "dataset", "dataset": ID}``; the dataset defaults to the pipe's ``_id``.

    Attributes:
        dataset: dataset written (one writer per dataset); unset: the pipe ``_id``.
        deletion_tracking: after a complete full run, tombstone the ids the run did not see
            (write ``_deleted: true`` versions; Sesam).
        circuit_breaker_threshold_count: most changes one run may make visible; past it the rest
            of the run is held and the pipe is tripped until ``sluice breaker commit|rollback``.
            Inactive until the dataset is populated (Sesam).
        circuit_breaker_threshold_factor: the same limit as a factor of the dataset's ids; with
            both set the larger limit applies. A run whose deletion tracking would pass the limit
            writes every tombstone held (all or nothing).
        circuit_breaker_deletion_factor: safe by default: when neither threshold is set, a full
            run whose deletion tracking would delete more than this factor of a populated
            dataset's live (not deleted) ids trips the breaker, every tombstone held. ``null``
            turns it off. Sluice's own guard; Sesam's breakers are opt-in.
    """

    type: Literal["dataset"]
    dataset: str | None = Field(default=None, min_length=1)
    deletion_tracking: bool = True
    circuit_breaker_threshold_count: int | None = Field(default=None, ge=0)
    circuit_breaker_threshold_factor: float | None = Field(default=None, gt=0)
    circuit_breaker_deletion_factor: float | None = Field(default=0.5, gt=0, le=1)


class DatasetSink(Sink):
    """Writes to a dataset: exactly-once with the pipe's checkpoint, one transaction per batch.
    Hashing happens in the prepare actor, overlapping the previous batch's transaction."""

    Config: ClassVar[type[ComponentConfig]] = DatasetSinkConfig
    config: DatasetSinkConfig
    prepares = True

    def prepare(self, entities: list[Entity]) -> PreparedBatch:
        """Hash and serialise the batch (raises EntityError for an entity without a string _id)."""
        return prepare(entities, pipe=self.context.pipe)

    @classmethod
    def datasets_written(cls, config: Any, pipe: str) -> list[str]:
        return [config.dataset or pipe]

    @property
    def dataset(self) -> str:
        return self.config.dataset or self.context.pipe

    async def open(self) -> None:
        """Refuse to run while the breaker is tripped; compute this run's change limit.

        Raises:
            PipeTrippedError: the dataset's circuit breaker is tripped.
        """
        info = await self.context.store.dataset_info(self.dataset)
        self.limit: int | None = None
        self.changes = 0
        self.tripped = False
        self._held_reason = ""
        self._hold_all = False
        start = self.context.run.start
        self._run_start = None if start is None else RunStart(info.next_offset if info else 0, start)
        if info is not None and info.trip is not None:
            raise PipeTrippedError(
                f"circuit breaker of dataset {self.dataset!r} is tripped (run {info.trip.pipe!r} "
                f"exceeded {info.trip.limit} changes); inspect it, then run "
                f"`sluice breaker commit {self.dataset}` or `sluice breaker rollback {self.dataset}`",
                pipe=self.context.pipe,
            )
        c = self.config
        if info is not None and info.populated:
            limits = [c.circuit_breaker_threshold_count] if c.circuit_breaker_threshold_count is not None else []
            if c.circuit_breaker_threshold_factor is not None:
                limits.append(int(c.circuit_breaker_threshold_factor * info.ids))
            self.limit = max(limits) if limits else None

    def breaker(self) -> tuple[int, int | None]:
        """See :meth:`Sink.breaker`."""
        return self.changes, self.limit

    def resume_breaker(self, changes: int, limit: int | None) -> None:
        """See :meth:`Sink.resume_breaker`."""
        self.changes, self.limit = changes, limit

    @property
    def _sweep(self) -> int | None:
        return self.context.run.sweep if self.config.deletion_tracking else None

    async def write(self, entities: list[Entity]) -> WriteResult:
        return await self.write_batch(entities, None)

    async def write_batch(
        self, entities: list[Entity] | PreparedBatch, checkpoint: Checkpoint | None, *, populate: bool = False
    ) -> WriteResult:
        if not len(entities) and checkpoint is None:
            return WriteResult()
        remaining = None if self.limit is None else max(self.limit - self.changes, 0)
        if self._hold_all:
            remaining = 0
        result = await self.context.store.write_batch(
            self.dataset, entities, pipe=self.context.pipe, checkpoint=checkpoint,
            sweep=self._sweep, keep_versions=self.context.keep_versions, change_limit=remaining,
            populate=populate, run_start=self._run_start,
        )
        self.changes += result.changes
        self.tripped = self.tripped or result.tripped
        return result

    async def finish(self, checkpoint: Checkpoint) -> WriteResult:
        """Deletion tracking (complete full runs only), then the final checkpoint.

        Raises:
            PipeTrippedError: the run exceeded the circuit breaker's limit; its excess is held.
        """
        total = WriteResult()
        sweep = self._sweep
        store = self.context.store
        if sweep is not None:
            await self._decide_tombstones(await store.count_unseen(self.dataset, sweep))
        while sweep is not None:
            unseen = await store.unseen(self.dataset, sweep, self.context.run.batch_size)
            if not unseen:
                break
            r = await self.write_batch([{**e, "_deleted": True} for e in unseen], None)
            total = WriteResult(total.new, total.changed, total.deleted + r.deleted, total.unchanged)
        self._hold_all = False
        await self.write_batch([], checkpoint, populate=True)
        if self.tripped:
            reason = self._held_reason or (
                f"this run made {self.changes} changes, the limit is {self.limit}; changes past the limit are held")
            raise PipeTrippedError(
                f"circuit breaker of dataset {self.dataset!r} tripped: {reason}. Inspect them, then "
                f"`sluice breaker commit {self.dataset}` or `sluice breaker rollback {self.dataset}` "
                "(a rollback restores the dataset and the pipe to before this run)",
                pipe=self.context.pipe,
            )
        return total

    async def _decide_tombstones(self, count: int) -> None:
        """Before any tombstone is written: hold them all if they would pass the run's limit, or,
        with no limit configured, delete more than ``circuit_breaker_deletion_factor`` of the
        dataset's live ids (all or nothing)."""
        if count == 0:
            return
        if self.limit is not None:
            if self.changes + count > self.limit:
                self._hold_all = True
                self._held_reason = (f"this run made {self.changes} changes and deletion tracking would "
                                     f"delete {count} more, past the limit of {self.limit}; every deletion is held")
            return
        factor = self.config.circuit_breaker_deletion_factor
        info = await self.context.store.dataset_info(self.dataset)
        if factor is None or info is None or not info.populated:
            return
        live = info.ids - info.deleted
        if count > factor * live:
            self._hold_all = True
            self._held_reason = (
                f"deletion tracking would delete {count} of its {live} entities, more than "
                f"circuit_breaker_deletion_factor {factor} of them; every deletion is held "
                "(set circuit_breaker_deletion_factor: null to turn this guard off)")


class NullSinkConfig(ComponentConfig):
    """``{"type": "null"}``: discards entities (the checkpoint still advances).

    Attributes:
        type: ``null``.
    """

    type: Literal["null"]


class NullSink(Sink):
    """Discards everything it receives."""

    Config: ClassVar[type[ComponentConfig]] = NullSinkConfig

    async def write(self, entities: list[Entity]) -> WriteResult:
        return WriteResult()
