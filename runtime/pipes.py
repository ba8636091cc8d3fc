"""PipeRun: one run of a pipe as an anyio task group of actors.

::

    source actor --mailbox--> transform actor ... --mailbox--> sink actor
                                                                 |
                                                   store: entities + checkpoint, one transaction

The source actor reads from the since the pipe stored, cuts the entities into batches of at most
``batch_size`` entities and ``max_batch_bytes`` bytes (their JSON size; a single larger entity
makes a batch of its own) and attaches the checkpoint that covers them (for chronological sources: the
``_updated`` of the batch's last entity). Transform actors pass checkpoints on after the entities
they cover. Only the sink commits. A failure in any actor cancels the task group; whatever was not
committed is not visible and the next run resumes from the last committed checkpoint.

Continuation strategy (Sesam): ``supports_since`` and ``is_chronological`` -> since checkpointed
per batch; ``supports_since`` and ``is_since_comparable`` -> the maximum ``_updated`` stored at the
end of the run; otherwise every run is a full run.
"""

from __future__ import annotations

import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import accumulate, pairwise
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import TaskStatus
from orjson import dumps

from runtime import tracking
from runtime.actors import Batch, Mailbox, MailboxStats
from runtime.components import ComponentContext, RunInfo, Sink, Source, Transform, closing
from runtime.config.models import ComponentSpec, PipeSpec
from runtime.deadletters import DeadLetters
from runtime.entities import Entity, PreparedBatch
from runtime.errors import (
    BadDataError,
    ComponentError,
    EntityError,
    OperationRefusedError,
    SluiceError,
    SourceEmptyError,
    first_error,
)
from runtime.sinces import since_order
from runtime.store.protocol import Checkpoint, Dependency, PipeState, StateStore, UnitProgress, WriteResult
from runtime.workunits.executor import UnitChunk, UnitRunner, merge_progress

log = structlog.get_logger("sluice.pipe")

MAILBOX_CAPACITY = 4
COALESCE_BATCHES = 8  # a sink that falls behind commits up to this many queued batches at once
COALESCE_ENTITIES = 10_000
Strategy = Literal["chronological", "max", "none", "units"]


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        pipe: pipe ``_id``.
        run_id: unique run id.
        status: ``completed``, ``failed`` or ``stopped`` (a clean stop on request).
        full: whether it was a full run (deletion tracking when completed).
        kind: ``full``, ``partial`` (since moved back, see :mod:`runtime.rescans`) or ``incremental``.
        read: entities read from the source (those put through again by dependency tracking
            included).
        tracked: source entities put through again by dependency tracking.
        new, changed, deleted, unchanged: what the sink did (deletion tracking included).
        conflicted: updates a share sink discarded as ``modified-in-system`` (optimistic locking).
        seconds: wall time of the run.
        started_us: when the run started, integer microseconds since the Unix epoch (the pump
            reads it back after a restart, see :mod:`runtime.pump.schedule`).
        error: the error that failed the run, or None.
    """

    pipe: str
    run_id: str
    status: str = "running"
    full: bool = False
    kind: str = "incremental"
    read: int = 0
    tracked: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicted: int = 0
    seconds: float = 0.0
    started_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    error: SluiceError | None = None

    @property
    def ok(self) -> bool:
        """True unless the run failed."""
        return self.status != "failed"

    units: dict[str, int] | None = None
    """Work units of the run by outcome (``done``, ``failed``, ``waiting``, ``dead``) and planning
    (``planned``, ``added``, ``retired``); None for a source without work units."""

    @property
    def changes(self) -> int:
        """Versions written (new + changed + deleted)."""
        return self.new + self.changed + self.deleted

    def add(self, result: WriteResult) -> None:
        self.new += result.new
        self.changed += result.changed
        self.deleted += result.deleted
        self.unchanged += result.unchanged
        self.conflicted += result.conflicted

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (execution log, pipe state)."""
        out = {k: getattr(self, k) for k in (
            "run_id", "status", "kind", "full", "read", "new", "changed", "deleted", "unchanged", "started_us")}
        out["seconds"] = round(self.seconds, 3)
        if self.units is not None:
            out["units"] = self.units
        if self.tracked:
            out["tracked"] = self.tracked
        if self.conflicted:
            out["conflicted"] = self.conflicted
        if self.error is not None:
            out["error"] = str(self.error)
        return out


def refuse_protected(spec: PipeSpec, action: str) -> None:
    """Refuse ``action`` (a reset, a full run) on a ``disable_set_last_seen`` pipe (Sesam).

    Raises:
        OperationRefusedError: the pipe's config has ``disable_set_last_seen: true``.
    """
    if spec.model.disable_set_last_seen:
        raise OperationRefusedError(
            f"{action} is refused: the pipe has disable_set_last_seen (its since protects "
            "a delta-only source's history); remove the flag from its config first", pipe=spec.id,
        )


def new_run_id() -> str:
    """A new unique run id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


def strategy_of(source: ComponentSpec) -> Strategy:
    """The continuation strategy of a configured source (Sesam's three flags), or ``units`` for a
    source split into work units (DIL: each unit keeps its own checkpoint and watermark)."""
    if source.cls.work_units(source.config) is not None:
        return "units"
    supports_since, is_chronological, is_since_comparable = source.cls.continuation(source.config)
    if supports_since and is_chronological:
        return "chronological"
    if supports_since and is_since_comparable:
        return "max"
    return "none"


RUN_IN_PROGRESS = "run_in_progress"
"""Key of the pipe info holding ``{"run_id", "started_us", "full"}`` from a run's ``run-started``
event to its end event (each written in one transaction with it): set while the pipe's lock is
free means the process running it died (:mod:`runtime.pump.interrupted`)."""

_STORED = object()


def plan_run(
    state: PipeState, strategy: Strategy, force_full: bool, start_since: Any = _STORED
) -> tuple[Any, int | None]:
    """Decide where a run starts: (since, sweep). ``sweep`` is not None for full runs.

    A stored ``sweep`` means a full run was interrupted: it is resumed (same marker, stored since),
    so ids it already saw stay marked and deletion tracking at its end stays correct.
    ``start_since`` (a partial rescan) replaces the stored since of an incremental run.
    """
    new_sweep = time.time_ns() // 1000
    if force_full:
        return None, new_sweep
    if strategy == "none":
        return None, state.sweep or new_sweep
    if state.sweep is not None:
        return state.since, state.sweep
    if state.since is None:
        return None, new_sweep
    return (state.since if start_since is _STORED else start_since), None


@dataclass
class _Progress:
    since: Any = None
    read: int = 0
    stopped: bool = False
    mailboxes: list[Mailbox] = field(default_factory=list)


class PipeRun:
    """One run of a pipe.

    Args:
        spec: the validated pipe.
        store: the state store.
        systems: open system actors by ``_id``.
        full: force a full run (since ignored, deletion tracking at the end).
        start_since: start an incremental run here instead of the stored since (partial rescan).
        config_dir: directory relative paths resolve against.
        on_progress: called with the live :class:`RunResult` after every committed batch.
        info_update: ``(info, result) -> changes`` merged into the pipe's info document in the
            transaction that records the run (the runtime's rescan bookkeeping).
        run_id: the run's id (default: a new one, see :func:`new_run_id`).
    """

    def __init__(
        self,
        spec: PipeSpec,
        store: StateStore,
        *,
        systems: dict[str, Any] | None = None,
        full: bool = False,
        start_since: Any = _STORED,
        config_dir: str = ".",
        on_progress: Callable[[RunResult], None] | None = None,
        info_update: Callable[[dict[str, Any], RunResult], dict[str, Any]] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.systems = systems or {}
        self.force_full = full
        self.start_since = start_since
        self.config_dir = config_dir
        self.on_progress = on_progress
        self.info_update = info_update
        self.result = RunResult(spec.id, run_id or new_run_id())
        self._stop = anyio.Event()
        self._progress = _Progress()
        self._tracking: tracking.TrackingPlan | None = None
        self._units: UnitRunner | None = None  # the run's work units, while they run

    def stop(self) -> None:
        """Ask the run to stop cleanly: no new batch is read; batches in flight are committed."""
        self._stop.set()

    def mailbox_statistics(self) -> list[MailboxStats]:
        """Snapshots of the run's mailboxes, source side first."""
        return [m.statistics() for m in self._progress.mailboxes]

    async def run(self) -> RunResult:
        """Run the pipe to the end of its source (or a stop request, or a failure).

        Returns the :class:`RunResult`; a failure is reported in it (``status == "failed"``,
        ``error`` set) and in the execution log, never raised. Cancellation propagates, after the
        run is recorded as failed ("cancelled").
        """
        started = time.monotonic()
        result = self.result
        with structlog.contextvars.bound_contextvars(pipe=self.spec.id, run_id=result.run_id):
            marker = {"run_id": result.run_id, "started_us": result.started_us, "full": self.force_full}
            await self.store.record_run(self.spec.id, result.run_id, "run-started", {"full": self.force_full},
                                        lambda info: {RUN_IN_PROGRESS: marker})
            log.info("run.started", forced_full=self.force_full)
            try:
                await self._run()
                result.status = "stopped" if self._progress.stopped else "completed"
            except SluiceError as exc:
                if result.kind == "partial":  # say why: the pump retries it, runtime.rescans skips it
                    exc.message = f"partial rescan from since {self.start_since!r}: {exc.message}"
                result.status, result.error = "failed", exc
            except BaseException as exc:
                cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
                reason = "run cancelled" if cancelled else f"run aborted: {type(exc).__name__}: {exc}"
                result.status, result.error = "failed", SluiceError(reason, pipe=self.spec.id)
                result.seconds = time.monotonic() - started
                with anyio.CancelScope(shield=True):
                    await self._record()
                raise
            result.seconds = time.monotonic() - started
            await self._record()
        return result

    async def _record(self) -> None:
        """The run's end event, last-run summary, counters and ``info_update`` in one transaction."""
        r = self.result
        event = {"completed": "run-completed", "stopped": "run-stopped"}.get(r.status, "run-failed")
        summary = r.summary()
        extra = self.info_update

        def update(info: dict[str, Any]) -> dict[str, Any]:
            counters = dict(info.get("counters", {}))
            for k in ("read", "new", "changed", "deleted", "unchanged"):
                counters[k] = counters.get(k, 0) + summary[k]
            changes = {"last_run": summary, "runs": info.get("runs", 0) + 1, "counters": counters,
                       RUN_IN_PROGRESS: None}
            return {**changes, **(extra(info, r) if extra else {})}

        with anyio.CancelScope(shield=True):
            await self.store.record_run(self.spec.id, r.run_id, event, summary, update)
        if r.error is not None:
            log.error("run.failed", error=str(r.error), seconds=summary["seconds"])
        else:
            log.info("run.finished", **{k: v for k, v in summary.items() if k != "run_id"})

    def _context(self, spec: ComponentSpec, run: RunInfo) -> ComponentContext:
        system_id = getattr(spec.config, "system", None)
        return ComponentContext(
            self.spec.id, self.store, run, self.systems.get(system_id) if system_id else None,
            self.config_dir, self.spec.model.compaction.keep_versions, tuple(self.spec.writes),
            bool(self.spec.transforms) and spec is self.spec.transforms[0]
            and self.spec.source.cls.tracks_dependencies,
            self.spec.sink.cls.holds_commits,
        )

    def _side_datasets(self) -> list[str]:
        """The datasets the pipe's source writes and its transforms' ledgers (not the sink's)."""
        source, pipe = self.spec.source, self.spec.id
        found = [*source.cls.datasets_written(source.config, pipe),
                 *(d for t in self.spec.transforms for d in t.cls.ledgers(t.config, pipe))]
        return list(dict.fromkeys(found))

    async def _unpopulated_hops(self) -> list[str]:
        """The datasets the pipe's transforms hop to (but with ``require-populated: false``) that
        do not exist or are not populated yet (no run of their writer has completed)."""
        hopped = sorted({ds for t in self.spec.transforms for ds in t.cls.datasets_required(t.config)})
        return [ds for ds in hopped if not ((info := await self.store.dataset_info(ds)) and info.populated)]

    async def _run(self) -> None:
        spec = self.spec
        if missing := await self._unpopulated_hops():
            # Sesam: a pipe does not run before the datasets it hops to are populated; joins
            # against a half-written dataset would write wrong outputs (and, untracked, keep them)
            log.warning("hops.input_not_populated", datasets=missing,
                        reason="the pipe runs once a run of each dataset's writer has completed")
            self._progress.stopped = True
            return
        state = await self.store.pipe_state(spec.id)
        strategy = strategy_of(spec.source)
        since, sweep = plan_run(state, strategy, self.force_full, self.start_since)
        if since is None and not spec.source.cls.full_read(spec.source.config):
            sweep = None  # not everything is read: no deletion tracking after this run
        run = RunInfo(self.result.run_id, sweep is not None, sweep, spec.model.batch_size,
                      Checkpoint(state.since, state.sweep, tracking=state.tracking or None), rescan=self.force_full)
        tracked = self.spec.tracked_datasets()
        if tracked:
            self._tracking = await tracking.plan(
                self.store, spec.id, tracked, state, full=run.full, resumed=run.full and sweep == state.sweep,
                limits=spec.model.dependency_tracking)
        if sweep is not None and sweep != state.sweep:
            # the full-run marker is durable before anything is read: a full run that fails or is
            # killed before its first commit is resumed as a full run, and its deletions still happen
            offsets = self._tracking.offsets if self._tracking is not None else None
            await self.store.save_checkpoint(spec.id, Checkpoint(since, sweep, tracking=offsets))
        self.result.full = run.full
        partial = self.start_since is not _STORED and since == self.start_since
        self.result.kind = "full" if run.full else ("partial" if partial else "incremental")
        source: Source = spec.source.cls(spec.source.config, self._context(spec.source, run))
        pump = spec.model.pump
        self._dead_letters = DeadLetters(
            spec.id, self.store, self.result.run_id, pump.dead_letter_dataset, pump.max_retries_per_entity
        )
        transforms: list[Transform] = [t.cls(t.config, self._context(t, run)) for t in spec.transforms]
        sink: Sink = spec.sink.cls(spec.sink.config, self._context(spec.sink, run))
        self._progress.since = since
        stages: list[Any] = [*transforms, *([_Prepare(sink)] if sink.prepares else [])]
        names = ["source", *[f"transform{i}" for i in range(len(transforms))],
                 *(["prepare"] if sink.prepares else []), "sink"]
        boxes = [Mailbox(f"{spec.id}/{a}->{b}", MAILBOX_CAPACITY) for a, b in pairwise(names)]
        self._progress.mailboxes = boxes
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._sink_actor, sink, boxes[-1], run, strategy, name=f"{spec.id}/sink")
                for i, t in enumerate(stages):
                    await tg.start(self._transform_actor, t, boxes[i], boxes[i + 1], name=f"{spec.id}/{names[i + 1]}")
                await tg.start(self._source_actor, source, boxes[0], since, run, strategy, name=f"{spec.id}/source")
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            for box in boxes:
                box.dispose()

    async def _guard(self, actor: str, component: Any, body: Any) -> None:
        """Open the component, run ``body``, close it; wrap foreign errors in ComponentError."""
        try:
            try:
                await component.open()
                await body()
            finally:
                with anyio.CancelScope(shield=True):
                    await component.close()
        except Exception as caught:
            # a component's own task group (the work-unit runner's) reports its first error
            exc = first_error(caught) if isinstance(caught, ExceptionGroup) else caught
            if isinstance(exc, SluiceError):
                exc.pipe = exc.pipe or self.spec.id
            elif not isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
                exc = ComponentError(f"{actor} ({type(component).__name__}) failed: {type(exc).__name__}: {exc}",
                                     pipe=self.spec.id)
                raise exc from caught
            # a SluiceError as itself; a broken mailbox: a neighbouring actor failed first, its error is reported
            if exc is caught:
                raise
            raise exc from None

    async def _source_actor(
        self, source: Source, outbox: Mailbox, since: Any, run: RunInfo, strategy: Strategy,
        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        progress = self._progress

        async def body() -> None:
            task_status.started()
            cut = _Cutter(self, outbox, since, run, strategy)
            if strategy == "units":
                await self._read_units(source, cut, run)
            else:
                async with closing(source.read(since)) as chunks:
                    async for chunk in chunks:
                        await cut.add(chunk)
                        if self._stop.is_set():
                            progress.stopped = True
                            break
            await cut.flush()
            last = cut.last
            if not source.complete:
                log.warning("source.incomplete", reason="the source stopped early; no deletion tracking")
                progress.stopped = True
            empty_fails = getattr(source.config, "if_source_empty", None) == "fail"
            fresh_full = run.full and since is None  # a resumed full run may have read it all before
            if fresh_full and progress.read == 0 and empty_fails and not progress.stopped:
                raise SourceEmptyError(
                    "source returned no entities on a full run and if_source_empty is 'fail'; "
                    "nothing was written. Check the source system, then run again",
                    pipe=self.spec.id,
                )
            if self._tracking is not None and self._tracking.pending and not progress.stopped:
                await self._read_tracked(outbox, self._tracking.pending, last, run)
            progress.since = last

        await self._guard("source", source, body)
        await outbox.close()  # only on success: after a failure the sink must not see an end

    async def _read_tracked(self, outbox: Mailbox, ids: list[str], last: Any, run: RunInfo) -> None:
        """Put the latest versions of the source entities dependency tracking found through the
        pipe again, in batches; each batch's checkpoint keeps the since the read ended at."""
        dataset = self.spec.source.config.dataset
        for start in range(0, len(ids), run.batch_size):
            if self._stop.is_set():
                self._progress.stopped = True
                return
            entities = await self.store.latest_versions(dataset, ids[start : start + run.batch_size])
            self._progress.read += len(entities)
            self.result.tracked += len(entities)
            await outbox.send(Batch(entities, Checkpoint(last, run.sweep), read=len(entities)))

    async def _read_units(self, source: Source, cut: _Cutter, run: RunInfo) -> None:
        """Run the source's due work units (see :mod:`runtime.workunits.executor`); their pages
        are cut into batches one page at a time, each batch carrying the progress of the units
        whose pages it completes."""
        units = source.work_units(source.config)
        assert units is not None  # strategy "units"
        lock = anyio.Lock()

        async def emit(chunk: UnitChunk) -> None:
            async with lock:  # one page at a time: a page's progress follows all its entities
                await cut.add(chunk)

        runner = self._units = UnitRunner(source, units, self.store, self.spec.id, run, self.result.run_id)
        tally = await runner.run(emit, self._stop)
        self.result.units = tally.summary()
        if self._stop.is_set():
            self._progress.stopped = True

    async def _emit(
        self, outbox: Mailbox, entities: list[Entity], last: Any, run: RunInfo, strategy: Strategy,
        units: dict[str, UnitProgress] | None = None,
    ) -> Any:
        self._progress.read += len(entities)
        checkpoint = None
        if strategy == "units":
            checkpoint = Checkpoint(last, run.sweep, units or None)
        elif strategy == "chronological":
            last = _ascending_updated(entities, last, self.spec.id)
            checkpoint = Checkpoint(last, run.sweep)
        elif strategy == "max":
            values = [e["_updated"] for e in entities if e.get("_updated") is not None]
            if values:
                top = max(values, key=since_order)
                last = top if last is None or since_order(top) > since_order(last) else last
        await outbox.send(Batch(entities, checkpoint, read=len(entities)))
        return last

    async def _transform_actor(
        self, transform: Transform | _Prepare, inbox: Mailbox, outbox: Mailbox,
        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async def body() -> None:
            task_status.started()
            async for batch in inbox:
                if isinstance(transform, _Prepare):
                    try:
                        prepared = transform.sink.prepare(batch.entities)
                    except EntityError:
                        if not self._dead_letters.enabled:
                            raise
                        prepared = None  # the sink writes this batch entity by entity
                    await outbox.send(Batch(batch.entities, batch.checkpoint, batch.read, prepared))
                    continue
                out = await transform.transform(batch.entities) if batch.entities else []
                await outbox.send(Batch(out, await self._with_dependencies(transform, batch.checkpoint), batch.read))

        await self._guard("transform", transform, body)
        await outbox.close()

    async def _with_dependencies(self, transform: Transform, checkpoint: Checkpoint | None) -> Checkpoint | None:
        """``checkpoint`` carrying the dependencies ``transform`` just recorded, so they commit
        with the outputs; a batch without a checkpoint gets them committed here, before its
        outputs are passed on (a crash in between re-runs the batch)."""
        found = transform.take_dependencies()
        if not found:
            return checkpoint
        if checkpoint is None:
            await self.store.record_dependencies(self.spec.id, found)
            return None
        return replace(checkpoint, dependencies={**(checkpoint.dependencies or {}), **found})

    async def _sink_actor(
        self, sink: Sink, inbox: Mailbox, run: RunInfo, strategy: Strategy,
        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        result = self.result
        run_since = self._progress.since  # where the run started (the source actor moves it on)
        letters = self._dead_letters

        async def body() -> None:
            task_status.started()
            if letters.enabled:
                result.add(await letters.replay(sink))
            while batches := await inbox.receive_many(COALESCE_BATCHES, COALESCE_ENTITIES):
                entities, checkpoint = _combine(batches), _last_checkpoint(batches)
                try:
                    result.add(await sink.write_batch(entities, checkpoint))
                    if self._units is not None and checkpoint is not None and checkpoint.units:
                        self._units.committed()  # units that ended free their share of the limit now
                except EntityError:
                    if not letters.enabled:
                        raise
                    result.add(await letters.write_singly(sink, [e for b in batches for e in b.entities]))
                    if checkpoint is not None:
                        await sink.write_batch([], checkpoint)
                else:
                    if letters.pending:
                        await letters.forget(_ids(entities))
                result.read += sum(b.read for b in batches)
                if self.on_progress is not None:
                    self.on_progress(result)
            progress = self._progress
            complete = not progress.stopped
            final_since = progress.since if strategy != "none" else None
            if complete and strategy == "units" and run.sweep is not None:
                if await self.store.units_swept(self.spec.id, run.sweep):
                    final_since = run.sweep  # a completed sweep: incremental runs from now on
                else:  # the sweep goes on in later runs; no deletion tracking before every unit is done
                    complete = False
                    await sink.write_batch([], Checkpoint(final_since, run.sweep))
            if complete:  # a stopped run commits nothing more: the next run resumes it
                offsets = self._tracking.offsets if self._tracking is not None and not run.full else None
                result.add(await sink.finish(Checkpoint(final_since, None, tracking=offsets)))
                for dataset in self._side_datasets():
                    await self.store.set_populated(dataset)
            if letters.enabled:  # a resumed full run has not re-read what came before its since
                await letters.settle(full=run.full and run_since is None and complete)
            if self.on_progress is not None:
                self.on_progress(result)

        await self._guard("sink", sink, body)


@dataclass
class _Prepare:
    """The prepare stage of a sink that ``prepares``: runs ``sink.prepare`` in its own actor."""

    sink: Sink

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _ascending_updated(entities: list[Entity], last: Any, pipe: str) -> Any:
    """The ``_updated`` of the last entity that has one (else ``last``), checking that the values
    never go down: a chronological source that is not ascending would lose data on resume.
    Datetime strings are compared by instant (:func:`runtime.sinces.since_order`).

    Raises:
        BadDataError: ``_updated`` decreased, or values cannot be compared.
    """
    last_key = since_order(last)
    for entity in entities:
        value = entity.get("_updated")
        if value is None:
            continue
        key = since_order(value) if value.__class__ is str else value  # datetimes by instant
        try:
            descending = last is not None and key < last_key
        except TypeError:
            descending = True
        if descending:
            raise BadDataError(
                f"the source is chronological but _updated went from {last!r} to {value!r} "
                f"(entity {entity.get('_id')!r}); resuming from a checkpoint would skip data. Set "
                "is_chronological: false (since is then stored at the end of the run) or order the source",
                location=f"pipe {pipe!r} source", pipe=pipe,
            )
        last, last_key = value, key
    return last


def _combine(batches: list[Batch]) -> Any:
    """The entities (or prepared entities, when every batch has them) of several batches as one write."""
    if all(b.prepared is not None for b in batches):
        return PreparedBatch.concat([b.prepared for b in batches])
    return [e for b in batches for e in b.entities]


def _ids(entities: Any) -> list[str]:
    """The ``_id`` s of a write (a list of entities or a PreparedBatch)."""
    if isinstance(entities, PreparedBatch):
        return entities.ids
    return [e["_id"] for e in entities if isinstance(e.get("_id"), str)]


def _last_checkpoint(batches: list[Batch]) -> Checkpoint | None:
    """The checkpoint covering all of ``batches``: the last one any of them carries, with the work
    units' progress of all of them (later progress of a unit wins)."""
    found = [b.checkpoint for b in batches if b.checkpoint is not None]
    if not found:
        return None
    last = found[-1]
    if not any(c.units or c.dependencies for c in found[:-1]):
        return last
    units: dict[str, UnitProgress] = {}
    dependencies: dict[str, set[Dependency]] = {}
    for c in found:
        merge_progress(units, c.units or {})
        dependencies.update(c.dependencies or {})
    return Checkpoint(last.since, last.sweep, units or None, last.tracking, dependencies or None)


class _Cutter:
    """Cuts a source's chunks into batches of at most ``batch_size`` entities and
    ``max_batch_bytes`` bytes (their JSON size) and sends them with their checkpoints.

    A :class:`UnitChunk`'s progress rides on the batch that holds the chunk's last entity (or on
    an empty batch of its own when the chunk ended a batch exactly); a source's page without
    entities (``running`` progress alone, e.g. an asynchronous job's id) is sent at once, with the
    entities pending before it. In a cluster member (the store has ``cluster`` set) every unit's
    last progress (done, failed, waiting) is also sent at once: its lease and its share of the
    pipe's concurrency limit are freed when it commits, not when the run ends.
    """

    def __init__(self, run: PipeRun, outbox: Mailbox, since: Any, info: RunInfo, strategy: Strategy) -> None:
        self.run, self.outbox, self.info, self.strategy = run, outbox, info, strategy
        self.last = since
        self.pending: list[Entity] = []
        self.used = 0
        self.units: dict[str, UnitProgress] = {}

    async def add(self, chunk: list[Entity]) -> None:
        size, budget = self.info.batch_size, self.run.spec.model.max_batch_bytes
        start = 0
        while start < len(chunk):
            rest = chunk[start : start + size - len(self.pending)]
            known = getattr(chunk, "nbytes", None) if len(rest) == len(chunk) else None
            whole = known if known is not None else len(dumps(rest, default=str))
            if self.used + whole < budget:
                take, grew = len(rest), whole
            else:
                sizes = list(accumulate(len(dumps(e, default=str)) for e in rest))
                take = min(bisect_left(sizes, budget - self.used) + 1, len(rest))
                grew = sizes[take - 1]
            start += take
            self.pending.extend(rest[:take])
            self.used += grew
            if len(self.pending) >= size or self.used >= budget:
                await self._send()
        if isinstance(chunk, UnitChunk) and chunk.progress:
            merge_progress(self.units, chunk.progress)
            ended = not chunk and getattr(self.run.store, "cluster", None) is not None
            if not self.pending or ended or (not chunk and all(p.status == "running" for p in chunk.progress.values())):
                await self._send()  # a source's page of progress alone (a job id) goes at once

    async def flush(self) -> None:
        if self.pending or self.units:
            await self._send()

    async def _send(self) -> None:
        units, self.units = self.units, {}
        entities, self.pending, self.used = self.pending, [], 0
        self.last = await self.run._emit(self.outbox, entities, self.last, self.info, self.strategy, units)
