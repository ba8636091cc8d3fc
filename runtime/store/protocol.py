"""The StateStore protocol: everything durable in Sluice goes through it.

A store holds four things:

* **datasets**: an append-only log of entity versions per dataset, an index of the latest version
  per ``_id``, the committed offset readers see, the populated flag and circuit-breaker state;
* **pipe state**: the pipe's ``since`` (continuation), the marker of a full run in progress
  (``sweep``), and a JSON document of run summaries and counters;
* **the work-unit ledger** (DIL): one row per unit with status, attempts, checkpoint, watermark,
  lease and last error;
* **the execution log**: started/completed/failed events per pipe run.

A batch of entities and the pipe's checkpoint are committed in one transaction
(:meth:`StateStore.write_batch`): exactly-once into datasets. Implementations: SQLite
(:mod:`runtime.store.sqlite`, the embedded default).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from runtime.entities import Entity, PreparedBatch

FOUND = "#"
"""The path of a :data:`Dependency` on an entity a hop found: its key is that entity's ``_id``."""

Dependency = tuple[str, str, str]
"""What a hop of a pipe looked up for a source entity: ``(dataset, path, key)``; ``path`` a
stored index path name (``'["customer_id"]'``) with ``key`` a typed join key
(:func:`runtime.dtl.joinkeys.join_keys`) looked up on it, or :data:`FOUND` with ``key`` the
``_id`` of an entity the look-up returned."""


@dataclass(frozen=True)
class Checkpoint:
    """A pipe's continuation state, committed together with the entities it covers.

    Attributes:
        since: the source's since value after the covered entities (any JSON value), or None for
            "from the beginning".
        sweep: marker of the full run in progress (microseconds since the epoch when it started),
            or None when no full run is in progress. Ids written or seen during a full run are
            marked with it; deletion tracking tombstones the unmarked ones (Sesam).
        units: progress of work units covered by the same entities (DIL), key -> a
            :class:`UnitProgress`; committed in the same transaction as the entities, so a unit
            resumes at its last committed page after a crash.
        tracking: dependency-tracking offsets (Sesam), hopped-to dataset -> the offset up to which
            its changes have been tracked: their dependent source entities were put through the
            pipe. None (or a dataset left out) leaves the stored offset as it is.
        dependencies: what the hops of the covered source entities looked up, source ``_id`` ->
            its :data:`Dependency` set (replacing that id's earlier ones, as
            :meth:`StateStore.record_dependencies` does), committed in the same transaction: a
            source entity is never passed by the since before its dependencies are durable.
    """

    since: Any = None
    sweep: int | None = None
    units: dict[str, UnitProgress] | None = None
    tracking: dict[str, int] | None = None
    dependencies: dict[str, set[Dependency]] | None = None


@dataclass(frozen=True)
class UnitProgress:
    """A change of one work unit's ledger row, committed with a checkpoint.

    Attributes:
        status: ``running`` (a page committed), ``done``, ``failed``, ``waiting`` (an
            asynchronous job not ready yet) or ``dead`` (``max_attempts`` failures).
        checkpoint: where the unit resumes (cursor, page, job id, locator); None to start over.
        watermark: the unit's high watermark after this progress; None leaves it as it is.
        error: the failure's message (``failed``/``dead``).
        due_us: when a ``failed`` or ``waiting`` unit may run again, microseconds since the epoch.
        swept: the full sweep the unit completed (``done`` in a sweep), None otherwise.
    """

    status: str
    checkpoint: Any = None
    watermark: Any = None
    error: str | None = None
    due_us: int | None = None
    swept: int | None = None


@dataclass(frozen=True)
class WriteResult:
    """What one :meth:`StateStore.write_batch` did.

    Attributes:
        new: versions written for ids the dataset did not have (deletions excluded).
        changed: versions written for existing ids whose hash changed (deletions excluded).
        deleted: deletion versions written (``_deleted: true``).
        unchanged: entities whose hash equalled the latest version (no-op writes), and
            conditional writes whose ``_if_hash`` did not (see :mod:`runtime.entities`).
        tripped: True when the dataset's circuit breaker is tripped after this batch.
        conflicted: a share sink's updates discarded as ``modified-in-system`` (optimistic
            locking); 0 for a dataset.
    """

    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    tripped: bool = False
    conflicted: int = 0

    @property
    def changes(self) -> int:
        """Versions written: new + changed + deleted."""
        return self.new + self.changed + self.deleted


@dataclass(frozen=True)
class TripInfo:
    """Why and where a dataset's circuit breaker tripped.

    Attributes:
        pipe: the pipe whose run tripped it.
        committed: the committed offset when it tripped; held versions lie above it.
        since: the pipe's since before the tripping batch, restored by a rollback.
        sweep: the pipe's full-run marker before the tripping batch, restored by a rollback.
        at_us: when it tripped, microseconds since the epoch.
        limit: the change limit that was exceeded.
        run_offset: the dataset's next offset when the tripping run started: versions from it up
            to ``committed`` were made visible by that run, and a rollback reverts them. None for
            a trip recorded by an older Sluice (a rollback then removes only the held versions).
        tracking: the pipe's dependency-tracking offsets before the tripping run, restored by a
            rollback (None: none recorded).
    """

    pipe: str
    committed: int
    since: Any
    sweep: int | None
    at_us: int
    limit: int
    run_offset: int | None = None
    tracking: dict[str, int] | None = None


@dataclass(frozen=True)
class RunStart:
    """Where a run started, so a circuit breaker it trips can be rolled back to before it.

    Attributes:
        offset: the dataset's next offset when the run started (0 for a new dataset).
        checkpoint: the pipe's checkpoint when the run started, restored by a rollback.
    """

    offset: int
    checkpoint: Checkpoint


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's metadata.

    Attributes:
        name: dataset id.
        committed: highest offset readers see; -1 when nothing is committed.
        next_offset: offset the next written version gets (versions above ``committed`` are held).
        populated: True once a run that fills it completed (Sesam's populated flag).
        ids: number of distinct ``_id`` s in its latest-version index, deleted ones included.
        deleted: how many of those are deleted.
        trip: circuit breaker state, None when not tripped.
        held: versions held above the committed offset by a tripped circuit breaker (0 when not
            tripped); ``ids`` and ``deleted`` count what readers see, without them.
        compaction_held_by: the consumers that have not read up to the committed offset, as
            (pipe, offset read up to; -1 for nothing), lowest first: compaction keeps every
            version above the lowest (see :meth:`StateStore.set_consumers`).
    """

    name: str
    committed: int
    next_offset: int
    populated: bool
    ids: int
    deleted: int
    trip: TripInfo | None
    held: int = 0
    compaction_held_by: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class PipeState:
    """A pipe's durable state.

    Attributes:
        pipe: pipe ``_id``.
        since: stored continuation value, None when the next run starts from the beginning.
        sweep: marker of a full run in progress, None otherwise.
        tracking: dependency-tracking offsets, hopped-to dataset -> offset (see
            :attr:`Checkpoint.tracking`); empty when the pipe tracks nothing yet.
        info: JSON document with ``last_run`` (summary of the latest run), ``runs`` (count),
            ``counters`` (cumulative read/new/changed/deleted/unchanged) and operator flags.
    """

    pipe: str
    since: Any = None
    sweep: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkUnit:
    """One row of the work-unit ledger (DIL).

    Attributes:
        pipe: owning pipe.
        key: unit key, unique per pipe (an id, a time window, a file path, a job).
        status: ``pending``, ``running``, ``waiting``, ``done``, ``failed`` or ``dead``.
        attempts: failed attempts since the unit last succeeded (or was retried by an operator).
        checkpoint: progress inside the unit (cursor, page, job id, result locator), JSON.
        watermark: the unit's high watermark (JSON, DIL): an incremental run of the unit asks
            only for what is newer.
        lease_owner: who holds the lease while running; None otherwise.
        lease_expiry_us: lease expiry, microseconds since the epoch; None when not leased.
        last_error: message of the last failure, None if none.
        variables: the unit's template variables (from its planning input), JSON object.
        due_us: when a failed or waiting unit may run again, microseconds since the epoch.
        swept: the last full sweep the unit completed, None if none.
        retired: its input value left the planning input (the unit no longer runs; its data stays).
        closed: its time window lies in the past, so a done unit is not read again (except in a
            full sweep).
    """

    pipe: str
    key: str
    status: str
    attempts: int
    checkpoint: Any
    watermark: Any
    lease_owner: str | None
    lease_expiry_us: int | None
    last_error: str | None
    variables: dict[str, Any] = field(default_factory=dict)
    due_us: int | None = None
    swept: int | None = None
    retired: bool = False
    closed: bool = False


UNIT_STATUSES = ("pending", "running", "waiting", "done", "failed", "dead", "retired")
"""Every status :meth:`StateStore.unit_counts` reports (``retired``: the unit's input value left
the planning input; :meth:`StateStore.work_units` takes it as ``status`` to list those)."""


@dataclass(frozen=True)
class LogEvent:
    """One execution-log event.

    Attributes:
        seq: increasing sequence number across all pipes.
        pipe: pipe ``_id``.
        run_id: the run it belongs to.
        ts_us: when, microseconds since the epoch.
        event: ``run-started``, ``run-completed``, ``run-failed``, ``run-stopped``, or an operator
            event (``pipe-reset``, ``circuit-breaker-commit``, ...).
        data: event fields (counts, seconds, error message).
    """

    seq: int
    pipe: str
    run_id: str
    ts_us: int
    event: str
    data: dict[str, Any]


class StateStore(Protocol):
    """Durable state of a Sluice installation. Every method may raise :class:`StoreError`."""

    async def open(self) -> None:
        """Create or migrate the schema and open connections."""

    async def close(self) -> None:
        """Close every connection. Safe to call twice."""

    # -- datasets ---------------------------------------------------------------------------
    async def write_batch(
        self,
        dataset: str,
        entities: Sequence[Entity] | PreparedBatch,
        *,
        pipe: str,
        checkpoint: Checkpoint | None,
        sweep: int | None = None,
        keep_versions: int | None = 2,
        change_limit: int | None = None,
        populate: bool = False,
        run_start: RunStart | None = None,
    ) -> WriteResult:
        """Write entities and the pipe's checkpoint in one transaction.

        Each entity is stripped of reserved fields (see :mod:`runtime.entities`) and hashed;
        one whose hash equals its id's latest version is a no-op. With ``sweep`` set, every id in
        the batch is marked seen by that full run, durably (in the batch's transaction), so a
        full run that resumes after a crash keeps its marks.
        ``keep_versions`` compacts the ids written to that many versions (None keeps all).
        ``change_limit`` is how many more changes this run may make visible (circuit breaker);
        beyond it versions are held above the committed offset and the dataset trips.
        ``populate`` sets the dataset's populated flag in the same transaction.
        ``run_start`` is recorded in a trip, so a rollback restores the state before the run.
        Compaction never removes a version above the lowest since of the pipes reading the
        dataset (see :meth:`set_consumers`), nor, with ``run_start``, an id's newest version from
        before the run.

        Args:
            dataset: dataset id; created on first write.
            entities: entities with a string ``_id``, in order (a later one for the same id wins),
                or the same already hashed by :func:`runtime.entities.prepare`.
            pipe: the writing pipe (its checkpoint is stored, and named in a trip).
            checkpoint: the pipe's new continuation state, or None to leave it.

        Raises:
            EntityError: an entity has no string ``_id``; nothing of the batch is written.
            StoreError: the transaction failed; nothing of the batch is written.
        """
        ...

    async def unseen(self, dataset: str, sweep: int, limit: int) -> list[Entity]:
        """Latest non-deleted versions of ids not marked by ``sweep``: up to ``limit``, as stored."""
        ...

    async def count_unseen(self, dataset: str, sweep: int) -> int:
        """How many ids :meth:`unseen` would return without a limit: the tombstones deletion
        tracking is about to write (the circuit breaker decides on them before any is written)."""
        ...

    async def set_populated(self, dataset: str) -> None:
        """Set the dataset's populated flag (created if missing)."""
        ...

    async def read(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[Entity], int | None]:
        """Read committed versions with offset > ``since`` in offset order.

        Without ``history`` a version is returned only if no newer committed version of its id
        exists (Sesam's dataset source default). Returns the entities and the since to continue
        from (the last offset examined; ``since`` unchanged when nothing is committed past it).
        A dataset that does not exist reads as empty.
        """
        ...

    async def read_bodies(
        self, dataset: str, *, since: int | None, limit: int, history: bool = False
    ) -> tuple[list[bytes], int | None]:
        """:meth:`read` without decoding: each version as its stored JSON bytes (publishers send
        them as they are, sparing the event loop a decode and an encode per entity)."""
        ...

    async def get(self, dataset: str, entity_id: str, *, history: bool = False) -> list[Entity]:
        """Committed versions of one id, oldest first; only the latest unless ``history``."""
        ...

    async def latest_versions(self, dataset: str, ids: Sequence[str]) -> list[Entity]:
        """The committed latest versions (deleted ones included) of those of ``ids`` the dataset
        has, in the order of ``ids``: batched statements, never one per id."""
        ...

    async def dataset_info(self, dataset: str) -> DatasetInfo | None:
        """Metadata of a dataset, None when it does not exist."""
        ...

    async def datasets(self) -> list[DatasetInfo]:
        """Metadata of every dataset, by name."""
        ...

    async def ensure_index(self, dataset: str, path: Sequence[str]) -> bool:
        """Make sure ``dataset`` has a hop index on property ``path`` (``["address", "id"]``),
        building it from the latest versions the first time, in one transaction; from then on
        every write to the dataset maintains it in its own transaction. Returns False (and
        builds nothing) when the dataset does not exist yet."""
        ...

    async def index_lookup(self, dataset: str, path: Sequence[str], keys: Sequence[str], *,
                           parse: Callable[[bytes], Entity] = orjson.loads) -> dict[str, list[Entity]]:
        """The committed, non-deleted latest versions (stored transit JSON) whose value at
        ``path`` has one of ``keys`` (:func:`runtime.dtl.joinkeys.join_keys`), per key, ordered
        by ``_id``; keys without matches are absent. One batched query over the index. ``parse``
        makes each stored body (JSON bytes) an entity: the hop resolver decodes transit values
        only in bodies that hold one.

        Raises:
            StoreError: the dataset has no index on ``path`` (call :meth:`ensure_index`).
        """
        ...

    async def index_page(self, dataset: str, path: Sequence[str], key: str, *, after: str | None,
                         limit: int) -> list[Entity]:
        """A page of :meth:`index_lookup` for one key: at most ``limit`` of its entities, those
        whose ``_id`` sorts after ``after`` (None: from the first), by ``_id``; page on with the
        last one's ``_id``. Memory holds one page, whatever the number of matches.

        Raises:
            StoreError: the dataset has no index on ``path`` (call :meth:`ensure_index`).
        """
        ...

    # -- dependency tracking (Sesam) ----------------------------------------------------------
    async def record_dependencies(self, pipe: str, dependencies: Mapping[str, Collection[Dependency]]) -> None:
        """Replace what the hops of ``pipe`` looked up for each source entity id of
        ``dependencies`` (an empty collection forgets the id's), in one transaction."""
        ...

    async def tracked_sources(self, pipe: str, dataset: str, after: int, upto: int, limit: int) -> list[str]:
        """The source entity ids (at most ``limit``, sorted) whose recorded look-ups in ``dataset``
        are touched by its versions with ``after < offset <= upto``: an id found (a
        ``Dependency`` with path :data:`FOUND`), or a join key the id's latest version has at a
        looked-up path (its current keys, from the dataset's hop index)."""
        ...

    async def tracked_joins(self, pipe: str, dataset: str, after: int, upto: int,
                            top: int) -> list[tuple[str, str, int]]:
        """What makes :meth:`tracked_sources` large: the ``top`` look-ups ``(path, key, sources)``
        matched by those versions, the most source entities first."""
        ...

    async def compact(self, dataset: str, keep_versions: int) -> int:
        """Delete all but the newest ``keep_versions`` committed versions per id; returns how many.

        Raises:
            PipeTrippedError: the dataset's circuit breaker is tripped (Sesam: no compaction then).
        """
        ...

    async def commit_breaker(self, dataset: str, keep_versions: int | None = None) -> int:
        """Make the held versions of a tripped dataset visible and reset the breaker; then compact
        the ids they touched to ``keep_versions`` (None: leave compaction to the next write).

        Returns the number of versions exposed. Raises OperationRefusedError when not tripped.
        """
        ...

    async def rollback_breaker(self, dataset: str) -> int:
        """Restore the dataset and the tripping pipe to their state before the tripping run:
        delete the held versions; revert each id the run made visible by a new version equal to
        its version before the run (a ``_deleted`` one for an id the run created); restore the
        pipe's checkpoint from before the run; reset the breaker (Sesam: a rollback removes what
        the tripping run wrote).

        Returns the number of versions deleted or reverted. Raises OperationRefusedError when
        not tripped.
        """
        ...

    async def set_consumers(self, consumers: dict[str, list[str]]) -> None:
        """Record which pipes read which dataset (dataset -> pipe ids), replacing what was recorded:
        their sinces hold compaction back (Sesam). Disabled pipes count."""
        ...

    async def compaction_holds(self, dataset: str) -> list[tuple[str, int]]:
        """The recorded consumers of a dataset with the offset up to which each has read (-1 for
        one that has read nothing), lowest first: compaction keeps every version above the lowest."""
        ...

    # -- pipes --------------------------------------------------------------------------------
    async def pipe_state(self, pipe: str) -> PipeState:
        """The pipe's state; an empty state for a pipe that never ran."""
        ...

    async def pipe_states(self) -> list[PipeState]:
        """Every pipe with stored state, by id."""
        ...

    async def save_checkpoint(self, pipe: str, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own (sinks that write elsewhere: at-least-once)."""
        ...

    def pipe_lock(self, pipe: str, holder: str = "") -> AbstractAsyncContextManager[None]:
        """Hold the pipe's lock: one run of a pipe, or one operator action on it, at a time,
        across processes. ``holder`` (e.g. ``run 3f2a...``) is named to whoever is refused.

        Raises:
            OperationRefusedError: another run or action (in this or another process) holds it.
        """
        ...

    async def record_run(
        self, pipe: str, run_id: str, event: str, data: dict[str, Any],
        update: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        """Append the run's end event and merge ``update(info)`` into the pipe's info document, in
        one transaction (``update`` is pure: it computes changes from the current info)."""
        ...

    async def update_pipe_info(self, pipe: str, changes: dict[str, Any]) -> PipeState:
        """Merge ``changes`` into the pipe's info document; returns the new state."""
        ...

    async def reset_pipe(self, pipe: str, since: Any = None) -> None:
        """Set since (None = from the beginning) and clear the full-run marker."""
        ...

    # -- execution log --------------------------------------------------------------------------
    async def log_event(self, pipe: str, run_id: str, event: str, data: dict[str, Any]) -> None:
        """Append an execution-log event (committed at once)."""
        ...

    async def execution_log(
        self, pipe: str, *, since: int | None = None, limit: int = 100, before: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEvent]:
        """Events of a pipe with since < seq < before, oldest first (or ``newest_first``), at most
        ``limit`` (the first ``limit`` in that order)."""
        ...

    # -- entity retries (dead letters) ---------------------------------------------------------
    async def record_entity_failure(
        self, pipe: str, key: str, entity: Entity, error: str, run_id: str
    ) -> int:
        """Record that writing ``entity`` failed; returns its attempts so far (at most one more
        per run: a second failure in the same ``run_id`` does not count again)."""
        ...

    async def entity_retries(self, pipe: str) -> list[tuple[str, Entity, int, str]]:
        """The pipe's failed entities waiting for a retry: (key, entity, attempts, last error)."""
        ...

    async def clear_entity_retries(self, pipe: str, keys: Sequence[str]) -> None:
        """Forget failed entities (written after all, dead-lettered, or superseded)."""
        ...

    # -- work units ---------------------------------------------------------------------------
    async def plan_units(self, pipe: str, units: Sequence[tuple[str, dict[str, Any], bool]]) -> tuple[int, int]:
        """Make the ledger match the planned units ``(key, variables, closed)``, in batched
        statements: new keys are added ``pending``; known keys get their variables and
        ``closed`` flag (a retired one is revived); keys not planned any more are retired (their
        data stays). Returns (added, retired).
        """
        ...

    async def prepare_units(self, pipe: str, *, sweep: int | None) -> None:
        """Make the units due for a run ``pending``: in a full sweep every unit not yet done in
        it (their checkpoints cleared, they read everything); otherwise done units whose window
        is open (``closed`` false). Units left ``running`` by a run that died resume from their
        checkpoint. Call only while holding the pipe's lock."""
        ...

    async def claim_units(self, pipe: str, owner: str, *, limit: int, lease_s: float) -> list[WorkUnit]:
        """Lease up to ``limit`` pending units, failed or waiting ones that are due, and running
        ones whose lease expired, to ``owner`` (status ``running``), in key order."""
        ...

    async def work_units(self, pipe: str, *, status: str | None = None) -> list[WorkUnit]:
        """The units of a pipe (not retired ones, unless ``status == "retired"``), by key."""
        ...

    async def unit_counts(self, pipe: str) -> dict[str, int]:
        """How many units of a pipe are in each status (``retired`` counted apart)."""
        ...

    async def units_swept(self, pipe: str, sweep: int) -> bool:
        """True when every unit of the pipe that is not retired completed the full sweep ``sweep``."""
        ...

    async def retry_units(self, pipe: str, keys: Sequence[str] | None = None) -> int:
        """Put dead and failed units (all of the pipe's, or ``keys``) back to ``pending`` with their
        attempts cleared; returns how many."""
        ...
