"""Base classes of pipe components (sources, transforms, sinks) and systems.

A component is a plain object with async methods; the runtime wraps it in an actor and connects
it with mailboxes. Each component class declares its config model beside its code (``Config``, a
pydantic model) and is registered under a ``type`` name in the :mod:`runtime.plugins` registry.
Components are built for each run from their validated config and a :class:`ComponentContext`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from runtime.entities import Entity
from runtime.store.protocol import Checkpoint, Dependency, StateStore, WriteResult
from runtime.workunits.model import Unit, UnitPage, WorkUnitsConfig

T = TypeVar("T")


@asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``iterator``, closed (its ``aclose()``, which an async generator has) when the block ends,
    however it ends, in this task: a reader stopped early (a ``break``, an error of the loop's
    body) releases what it holds across its yields (a concurrency token, a connection, a remote
    file handle) at once, instead of whenever the garbage collector finalises it in another task,
    where a task-bound resource such as an anyio ``CapacityLimiter`` token cannot be released."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class Chunk(list[Any]):
    """A list of entities a source yields, with the byte size it read them from.

    Sources that know the size (lines of a file, a response body) yield a ``Chunk`` so the
    runtime need not serialise the entities to keep batches within ``max_batch_bytes``; a plain
    list is measured instead.

    Args:
        entities: the entities.
        nbytes: their size in bytes as read.
    """

    def __init__(self, entities: list[Entity], nbytes: int) -> None:
        super().__init__(entities)
        self.nbytes = nbytes


class ComponentConfig(BaseModel):
    """Base of every component config model: unknown keys are errors, ``type`` names the class.

    Attributes:
        type: the component's type name, as registered (``sluice describe`` lists them).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str

    def system_problems(self, system_id: str, system: Any) -> list[tuple[str, str]]:
        """What is wrong with this config given the system its ``system`` key names (called when
        the config is loaded, so ``sluice check`` finds what the component would refuse on open).

        Args:
            system_id: the system's ``_id``.
            system: the system's validated config (an instance of its ``Config``).

        Returns:
            ``(key, reason)`` pairs, keys relative to the component (``operation``); none by
            default.
        """
        return []


class SourceConfig(ComponentConfig):
    """Options every source accepts.

    Attributes:
        if_source_empty: ``"fail"``: a *full* run that reads no entity fails instead of deleting
            everything through deletion tracking (Sesam's guard for sporadic empty responses).
    """

    if_source_empty: Literal["fail"] | None = None


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run a component is built for.

    Attributes:
        run_id: unique id of the run (also bound to every log line).
        full: True for a full run (since empty at start; deletion tracking at the end).
        sweep: the full-run marker (see :class:`Checkpoint`), None for incremental runs.
        batch_size: maximum entities per batch.
        start: the pipe's checkpoint when the run started (a circuit breaker rollback restores
            it), None where the run is not a pipe run (a receiver's request).
        rescan: the run was asked to read everything again (``sluice run --full``, the API's
            ``start-rescan``), even where it is no sweep (a source whose full run does not read
            everything, such as ``files``): work units are read whole, watermarks ignored.
    """

    run_id: str
    full: bool
    sweep: int | None
    batch_size: int
    start: Checkpoint | None = None
    rescan: bool = False


@dataclass(frozen=True)
class ComponentContext:
    """What a component may use: its pipe, the store, its system, the run.

    Attributes:
        pipe: the pipe ``_id``.
        store: the state store (sinks commit through it).
        run: the current run.
        system: the system actor named by the component's ``system`` key, or None.
        config_dir: directory of the configuration (relative file paths resolve against it).
        keep_versions: the pipe's ``compaction.keep_versions`` (None keeps every version).
        writes: the datasets the pipe writes (its sink's; a ``dtl`` transform diffs children
            against them).
        tracks_dependencies: the component is the first transform of a pipe whose source
            supports dependency tracking (Sesam: a ``dataset`` source): it records what its hops
            look up per source entity (:meth:`Transform.datasets_tracked`).
        sink_holds_commits: the pipe's sink commits a batch's checkpoint only later
            (:attr:`Sink.holds_commits`): a source must not wait within the run to see it.
    """

    pipe: str
    store: StateStore
    run: RunInfo
    system: Any = None
    config_dir: str = "."
    keep_versions: int | None = 2
    writes: tuple[str, ...] = ()
    tracks_dependencies: bool = False
    sink_holds_commits: bool = False


class Component:
    """Common part of sources, transforms and sinks.

    ``pump_runs`` is False for components whose data moves on HTTP requests (publishers,
    receivers): the pump and ``sluice run`` leave their pipes alone.
    """

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    pump_runs: ClassVar[bool] = True

    def __init__(self, config: Any, context: ComponentContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def datasets_read(cls, config: Any) -> list[str]:
        """Datasets this component reads (for dependency order and signalling)."""
        return []

    @classmethod
    def datasets_required(cls, config: Any) -> list[str]:
        """Datasets that must be populated before a run of a pipe with this component (a
        transform's hopped-to datasets, Sesam). None by default."""
        return []

    @classmethod
    def datasets_written(cls, config: Any, pipe: str) -> list[str]:
        """Datasets this component writes. Those of a source (a dead-letter dataset) are marked
        populated when a run of the pipe completes (Sesam's populated flag, which hops wait
        for); a sink marks its own in :meth:`Sink.finish`."""
        return []

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def close(self) -> None:
        """Release resources; called after the run, also when it failed."""


class Source(Component, ABC):
    """Produces entities, in batches.

    Continuation flags (Sesam): ``supports_since`` (the source uses the since value),
    ``is_chronological`` (entities come in increasing ``_updated`` order, so since can be
    checkpointed per batch), ``is_since_comparable`` (``_updated`` values can be ordered, so the
    maximum can be stored at the end of the run). The runtime derives since from the ``_updated``
    of the entities the source yields.
    """

    Config: ClassVar[type[ComponentConfig]] = SourceConfig
    supports_since: ClassVar[bool] = False
    #: its entities can be looked up by ``_id`` in a dataset, so the first transform's hops get
    #: dependency tracking (Sesam: only the ``dataset`` source)
    tracks_dependencies: ClassVar[bool] = False
    is_chronological: ClassVar[bool] = False
    is_since_comparable: ClassVar[bool] = False

    @classmethod
    def continuation(cls, config: Any) -> tuple[bool, bool, bool]:
        """(supports_since, is_chronological, is_since_comparable) for this config; sources whose
        flags are configurable (Sesam: rest, json) override this."""
        return cls.supports_since, cls.is_chronological, cls.is_since_comparable

    @classmethod
    def full_read(cls, config: Any) -> bool:
        """Whether a run without since reads *everything* the source has (so deletion tracking
        may follow it). False e.g. for a REST source that then sends ``initial_since_value``."""
        return True

    complete: bool = True
    """Set False by a source that stopped early on purpose (e.g. a page cap): the run then ends
    as ``stopped``, with no deletion tracking."""

    @classmethod
    def datasets_read(cls, config: Any) -> list[str]:
        """Datasets this source reads: its ``work_units.dataset`` (planning input), if any."""
        units = cls.work_units(config)
        return [units.dataset] if units is not None and units.dataset else []

    @classmethod
    def work_units(cls, config: Any) -> WorkUnitsConfig | None:
        """The ``work_units`` config when this source's work is split into work units (DIL); the
        runtime then calls :meth:`read_unit` per unit instead of :meth:`read`."""
        units = getattr(config, "work_units", None)
        return units if isinstance(units, WorkUnitsConfig) else None

    def unit_unchanged(self, variables: dict[str, Any], watermark: Any) -> bool:
        """Whether a ``done`` unit whose ledger watermark is ``watermark`` has nothing new to read
        now that its planning input gives it ``variables``. The runtime plans such units *closed*
        (like a past time window): an incremental run neither claims nor reads them, and they
        cost no commit. A source overriding this is asked for every done unit at each run's
        planning (one ledger read); the default (False) reads every open unit again.
        """
        return False

    def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        """Yield the pages of one work unit, resuming at ``unit.checkpoint``; ask only for what is
        newer than ``unit.watermark`` when it is set. Raising fails this unit alone.

        Raises:
            NotImplementedError: the source does not support work units.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support work units")

    @abstractmethod
    def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        """Yield lists of entities newer than ``since`` (None: all of them); a :class:`Chunk`
        when the source knows their size in bytes.

        Raises:
            BadDataError: the source returned unusable data (names request, file or record).
            TransientError: a retryable failure.
        """


class Transform(Component, ABC):
    """Turns a batch of entities into another (possibly empty or longer) list of entities."""

    @classmethod
    def datasets_tracked(cls, config: Any) -> dict[str, str]:
        """The datasets whose changes put source entities through the pipe again when this is
        its first transform (dependency tracking, Sesam), each with the config position of the
        hop that joins it (for messages). None by default."""
        return {}

    @classmethod
    def side_effects(cls, config: Any) -> bool:
        """Whether a call of :meth:`transform` changes another system (Sesam's
        ``side_effects``): a pipe with such a transform is refused as a publisher (every request
        would call it) and with dependency tracking (a re-run from tracking would send again).
        False by default."""
        return False

    @classmethod
    def ledgers(cls, config: Any, pipe: str) -> list[str]:
        """Datasets the transform records its own calls in (an outcome ledger), apart from the
        pipe's output (not in its ``writes``, which name where its entities go); they are marked
        populated when a run of the pipe completes. None by default."""
        return []

    @abstractmethod
    async def transform(self, entities: list[Entity]) -> list[Entity]:
        """Return the transformed entities, in order."""

    def take_dependencies(self) -> dict[str, set[Dependency]] | None:
        """What the last :meth:`transform` call's hops looked up, per source ``_id``, when the
        transform tracks dependencies (Sesam); the pipe commits them with the batch's checkpoint
        (:attr:`Checkpoint.dependencies`). None by default."""
        return None


class Sink(Component, ABC):
    """Receives batches. The default :meth:`write_batch` writes first and commits the checkpoint
    after (at-least-once); a sink that can do both in one transaction overrides it.

    A sink with ``prepares = True`` gets its own *prepare* actor in front of it: :meth:`prepare`
    (CPU work such as hashing) runs on batch N+1 while the sink writes batch N, and
    :meth:`write_batch` receives what ``prepare`` returned.

    A sink with ``holds_commits = True`` commits a batch's checkpoint (and the work-unit progress
    in it) only later, at a point of its own (the ``files`` sink: at its next rename, perhaps the
    run's end), not when :meth:`write_batch` returns.
    """

    prepares: ClassVar[bool] = False
    holds_commits: ClassVar[bool] = False

    def prepare(self, entities: list[Entity]) -> Any:
        """Turn entities into what :meth:`write_batch` takes (only called when ``prepares``)."""
        return entities

    @abstractmethod
    async def write(self, entities: list[Entity]) -> WriteResult:
        """Make the entities durable in the target."""

    async def write_batch(self, entities: Any, checkpoint: Checkpoint | None) -> WriteResult:
        """Write the entities (or what :meth:`prepare` made of them), then commit the checkpoint."""
        result = await self.write(entities) if entities else WriteResult()
        if checkpoint is not None:
            await self.context.store.save_checkpoint(self.context.pipe, checkpoint)
        return result

    async def finish(self, checkpoint: Checkpoint) -> WriteResult:
        """Called once after the last batch when the source was exhausted without error; commits
        the run's final checkpoint (since; full-run marker cleared). Returns the changes it made
        (a dataset sink's deletion tracking)."""
        await self.context.store.save_checkpoint(self.context.pipe, checkpoint)
        return WriteResult()

    def breaker(self) -> tuple[int, int | None]:
        """(changes made since :meth:`open`, circuit breaker limit or None): none by default."""
        return 0, None

    def resume_breaker(self, changes: int, limit: int | None) -> None:
        """Count ``changes`` already made against ``limit``, so a "run" spanning several sink
        instances (a receiver's full-sync sequence, one request each) has one circuit breaker
        limit. Sinks without a breaker ignore it."""


class System:
    """A long-lived resource shared by the pipes that name it (connection pool, auth, limits).

    ``config_dir`` (the configuration's directory, set by the runtime before :meth:`open`) is what
    relative paths in the system's config resolve against.
    """

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    config_dir: str = "."

    def __init__(self, config: Any, system_id: str) -> None:
        self.config = config
        self.id = system_id

    async def open(self) -> None:
        """Acquire the shared resources."""

    async def close(self) -> None:
        """Release them."""
