"""The embedding API: :class:`Runtime` loads a config, runs pipes, reads datasets and state.

It runs inside the caller's event loop (asyncio)::

    async with Runtime("config/demo", data_dir=".sluice") as rt:
        results = await rt.run_all()
        countries = await rt.entities("countries", limit=10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from runtime.config import Config, PipeSpec, Secrets, load_config
from runtime.entities import Entity
from runtime.errors import OperationRefusedError, SluiceError
from runtime.pipes import PipeRun, RunResult, new_run_id, refuse_protected, strategy_of
from runtime.plugins import Registry, default_registry
from runtime.pump.interrupted import record_interrupted
from runtime.pump.pumps import has_pump
from runtime.rescans import after_run, choose_run
from runtime.store import DatasetInfo, LogEvent, PipeState, StateStore, make_store

log = structlog.get_logger("sluice.runtime")

MAX_PASSES = 20
PROTECTED = "disable_set_last_seen"


class Runtime:
    """One Sluice installation: a config directory, a state store, the systems it opens.

    Args:
        config_dir: directory of pipe and system files.
        data_dir: where state lives by default (``DATA_DIR/sluice.db``); created if missing.
        store: a store URL (``sqlite:///path``) or an unopened :class:`StateStore`; default SQLite
            in ``data_dir``.
        registry: component registry (default: built-ins and installed plugins).
        secrets: where ``$SECRET(...)`` values come from (default: the environment).

    Raises (on entering):
        ConfigError: the config is invalid (every problem listed); nothing has run.
        StoreError: the store cannot be opened.
    """

    def __init__(
        self,
        config_dir: str | Path,
        *,
        data_dir: str | Path = ".sluice",
        store: str | StateStore | None = None,
        registry: Registry | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.data_dir = Path(data_dir)
        self.registry = registry or default_registry()
        self.secrets = secrets
        self.store: StateStore = (
            store if store is not None and not isinstance(store, str) else make_store(store, self.data_dir)
        )
        self.config: Config | None = None
        self.systems: dict[str, Any] = {}
        self.running: dict[str, PipeRun] = {}
        self._claimed: set[str] = set()

    async def __aenter__(self) -> Runtime:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Validate the config, open the store, record the config's facts the store acts on
        (which pipes are ``disable_set_last_seen``, which pipes read which dataset: their sinces
        hold compaction back), open the systems (see class docstring for errors)."""
        self.config = load_config(self.config_dir, self.registry, self.secrets)
        for warning in self.config.warnings:
            log.warning("config.warning", file=warning.file, pipe=warning.pipe, reason=warning.reason)
        await self.store.open()
        try:
            await self._record_config(self.config)
            for spec in self.config.systems.values():
                system = spec.cls(spec.config, spec.id)
                await system.open()
                self.systems[spec.id] = system
        except BaseException:
            await self.close()
            raise

    async def _record_config(self, config: Config) -> None:
        consumers: dict[str, list[str]] = {}
        for spec in config.pipes.values():
            if strategy_of(spec.source) == "chronological":  # its since is an offset of what it reads
                for ds in spec.reads:
                    consumers.setdefault(ds, []).append(spec.id)
            protected = spec.model.disable_set_last_seen
            if bool((await self.store.pipe_state(spec.id)).info.get(PROTECTED)) != protected:
                await self.store.update_pipe_info(spec.id, {PROTECTED: protected})
        await self.store.set_consumers(consumers)

    async def close(self) -> None:
        """Close systems and the store."""
        for system in self.systems.values():
            await system.close()
        self.systems.clear()
        await self.store.close()

    def _config(self) -> Config:
        if self.config is None:
            raise SluiceError("the runtime is not open; use `async with Runtime(...)`")
        return self.config

    def pipe_ids(self) -> list[str]:
        """Pipe ids in dependency order."""
        return list(self._config().pipes)

    async def run_pipe(
        self, pipe: str, *, full: bool = False, on_progress: Callable[[RunResult], None] | None = None
    ) -> RunResult:
        """Run one pipe to the end of its source.

        Args:
            pipe: pipe ``_id``.
            full: a full run (since ignored; deletion tracking when it completes).
            on_progress: called with the live result after every committed batch.

        Returns:
            The run's result; a failed run has ``status == "failed"`` and ``error`` set.

        Raises:
            OperationRefusedError: unknown pipe, ``pump.mode`` is ``off``, it is running, or
                ``full`` for a ``disable_set_last_seen`` pipe (a full run would replay its source).
        """
        spec = self._config().pipes.get(pipe)
        if spec is None:
            raise OperationRefusedError(f"no pipe {pipe!r} in {self.config_dir}")
        if spec.model.pump.mode == "off":
            raise OperationRefusedError(f"pipe {pipe!r} has pump.mode 'off' and cannot run", pipe=pipe)
        if full:
            refuse_protected(spec, "a full run")
        if pipe in self.running or pipe in self._claimed:
            raise OperationRefusedError("already running", pipe=pipe)
        self._claimed.add(pipe)  # before the first await: two callers cannot both get here
        try:
            run_id = new_run_id()
            async with self.store.pipe_lock(pipe, holder=f"run {run_id}"):  # and no other process meanwhile
                await record_interrupted(self.store, pipe)  # a run whose process died
                return await self._run_claimed(spec, full, on_progress, run_id)
        finally:
            self._claimed.discard(pipe)

    async def _run_claimed(
        self, spec: PipeSpec, full: bool, on_progress: Callable[[RunResult], None] | None, run_id: str
    ) -> RunResult:
        pipe = spec.id
        state = await self.store.pipe_state(pipe)
        now = datetime.now(UTC)
        kind, start = ("full", None) if full else choose_run(spec.model.pump, state.info, state.since, now)
        options: dict[str, Any] = {}
        if kind == "full" and (full or (state.since is not None and state.sweep is None)):
            options["full"] = True  # a rescan; an interrupted full run is resumed instead
        elif kind == "partial":
            options["start_since"] = start

        def bookkeeping(info: dict[str, Any], result: RunResult) -> dict[str, Any]:
            error = None if result.error is None else str(result.error)
            return after_run(result.kind, info, result.status, now, error=error)  # type: ignore[arg-type]

        run = PipeRun(
            spec, self.store, systems=self.systems, config_dir=str(self.config_dir),
            on_progress=on_progress, info_update=bookkeeping, run_id=run_id, **options,
        )
        self.running[pipe] = run
        try:
            return await run.run()
        finally:
            del self.running[pipe]

    async def run_all(
        self, *, full: bool = False, on_progress: Callable[[RunResult], None] | None = None
    ) -> list[RunResult]:
        """Run pipes in dependency order until no pipe has anything left to do.

        The first pass runs every pipe (``pump.mode`` ``off`` and request-driven publisher and
        receiver pipes excepted); later passes run only
        pipes reading a dataset that has committed entities past their since (cycles). A pipe
        that failed is not run again in this call.
        """
        config = self._config()
        if full:
            for spec in config.pipes.values():
                refuse_protected(spec, "a full run")
        results: list[RunResult] = []
        failed: set[str] = set()
        for n in range(MAX_PASSES):
            ran = False
            for pid, spec in config.pipes.items():
                if spec.model.pump.mode == "off" or pid in failed or not has_pump(spec):
                    continue
                if n > 0 and not await self.has_pending_input(pid):
                    continue
                result = await self.run_pipe(pid, full=full and n == 0, on_progress=on_progress)
                results.append(result)
                ran = True
                if not result.ok:
                    failed.add(pid)
            if not ran:
                return results
        log.warning("run_all.passes_exhausted", passes=MAX_PASSES)
        return results

    async def has_pending_input(self, pipe: str) -> bool:
        """True when a chronological dataset-reading pipe has committed input past its since, or
        a dataset it tracks (dependency tracking) has changes past its tracking offset."""
        spec = self._config().pipes[pipe]
        if strategy_of(spec.source) != "chronological":
            return False
        state = await self.store.pipe_state(pipe)
        since = state.since if isinstance(state.since, int) else -1
        offsets = {ds: since for ds in spec.source.cls.datasets_read(spec.source.config)}
        offsets.update((ds, state.tracking.get(ds, since)) for ds in state.tracking)
        for ds, upto in offsets.items():
            info = await self.store.dataset_info(ds)
            if info is not None and info.committed > upto:
                return True
        return False

    async def entities(
        self, dataset: str, *, since: int | None = None, limit: int = 100, history: bool = False
    ) -> list[Entity]:
        """Committed entities of a dataset after ``since`` (latest versions unless ``history``)."""
        entities, _ = await self.store.read(dataset, since=since, limit=limit, history=history)
        return entities

    async def entity(self, dataset: str, entity_id: str, *, history: bool = False) -> list[Entity]:
        """Versions of one entity (only the latest unless ``history``); empty if unknown."""
        return await self.store.get(dataset, entity_id, history=history)

    async def datasets(self) -> list[DatasetInfo]:
        """Every dataset in the store."""
        return await self.store.datasets()

    async def dataset(self, dataset: str) -> DatasetInfo | None:
        """One dataset's metadata, None if it does not exist."""
        return await self.store.dataset_info(dataset)

    async def pipe_state(self, pipe: str) -> PipeState:
        """A pipe's stored state (since, last run, counters)."""
        return await self.store.pipe_state(pipe)

    async def execution_log(self, pipe: str, *, since: int | None = None, limit: int = 100) -> list[LogEvent]:
        """A pipe's execution-log events."""
        return await self.store.execution_log(pipe, since=since, limit=limit)

    async def reset_pipe(self, pipe: str, since: Any = None) -> None:
        """Set a pipe's since (None: the next run is a full run) — Sesam's reset / update-last-seen.

        Raises:
            OperationRefusedError: the pipe has ``disable_set_last_seen`` (in its config or
                recorded from an earlier run), or is running.
        """
        await reset_pipe(self.store, pipe, self.config, since)

    async def retry_units(self, pipe: str, keys: Sequence[str] | None = None) -> int:
        """Put a pipe's dead and failed work units (every one, or those of ``keys``) back to
        ``pending``; returns how many (see :func:`retry_units`)."""
        return await retry_units(self.store, pipe, keys)

    async def commit_breaker(self, dataset: str) -> int:
        """Expose the versions held by a tripped circuit breaker (then compact them per the writing
        pipe's ``compaction.keep_versions``); returns how many."""
        writer = next((p for p in self._config().pipes.values() if dataset in p.writes), None)
        keep = writer.model.compaction.keep_versions if writer is not None else None
        return await breaker(self.store, dataset, "commit", keep_versions=keep)

    async def rollback_breaker(self, dataset: str) -> int:
        """Delete the held versions and restore the tripping pipe's since; returns how many."""
        return await breaker(self.store, dataset, "rollback")

    async def serve(self, settings: Any = None, *, handle_signals: bool = False) -> None:
        """Run the daemon (pumps + HTTP service API) on this open runtime until stopped; see
        :func:`runtime.daemon.serve` (``settings``: a ``DaemonSettings``)."""
        from runtime.daemon import serve

        await serve(self, settings, handle_signals=handle_signals)


async def reset_pipe(store: StateStore, pipe: str, config: Config | None, since: Any = None) -> None:
    """Reset a pipe's since in ``store`` (used by the CLI without a config too), holding the
    pipe's lock: never while a run of it is going on, in any process.

    Whether the pipe is protected follows ``config`` when given (the flag the store recorded from
    the last config otherwise).

    Raises:
        OperationRefusedError: the pipe has ``disable_set_last_seen``, or a run holds its lock.
    """
    spec = config.pipes.get(pipe) if config else None
    if spec is not None:
        refuse_protected(spec, "a reset")
    elif (await store.pipe_state(pipe)).info.get(PROTECTED):
        raise OperationRefusedError(
            "a reset is refused: the pipe's last config had disable_set_last_seen; if the "
            "flag is gone from the config, pass it (--config DIR) or run the pipe once", pipe=pipe,
        )
    async with store.pipe_lock(pipe, holder="a reset"):
        await store.reset_pipe(pipe, since)
        await store.log_event(pipe, "-", "pipe-reset", {"since": since})


async def breaker(store: StateStore, dataset: str, action: str, *, keep_versions: int | None = None) -> int:
    """Commit or roll back a dataset's tripped circuit breaker and log it on the tripping pipe,
    holding that pipe's lock (never while it runs). ``keep_versions`` (commit only): compact the
    exposed ids; None leaves it to the next write.

    Raises:
        OperationRefusedError: the breaker is not tripped, or a run of the tripping pipe holds its lock.
    """
    info = await store.dataset_info(dataset)
    if info is None or info.trip is None:
        raise OperationRefusedError(
            f"dataset {dataset!r} has no tripped circuit breaker; nothing to commit or roll back")
    pipe = info.trip.pipe
    async with store.pipe_lock(pipe, holder=f"a circuit breaker {action}"):
        if action == "commit":
            n = await store.commit_breaker(dataset, keep_versions)
        else:
            n = await store.rollback_breaker(dataset)
        await store.log_event(pipe, "-", f"circuit-breaker-{action}", {"dataset": dataset, "versions": n})
    return n


async def retry_units(store: StateStore, pipe: str, keys: Sequence[str] | None = None) -> int:
    """Put a pipe's dead and failed work units (every one, or those of ``keys``) back to
    ``pending`` with their attempts cleared, holding the pipe's lock (never while a run of it is
    going on, in any process), and log ``units-retried``; returns how many went back. A unit keeps
    its checkpoint, so it resumes where it failed (DIL: a failed work unit is retried alone).

    Raises:
        OperationRefusedError: the store holds no work units of ``pipe``, a key names none of its
            units, or a run holds the pipe's lock.
    """
    async with store.pipe_lock(pipe, holder="a units retry"):
        if not await store.unit_counts(pipe):
            raise OperationRefusedError(
                "has no work units in the store: it has not run yet, or its source has no work_units", pipe=pipe)
        if keys:
            known = {u.key for u in await store.work_units(pipe)}
            unknown = [k for k in keys if k not in known]
            if unknown:
                raise OperationRefusedError(
                    f"no work unit {', '.join(map(repr, unknown))} among its units (retired ones excepted); "
                    f"`sluice units {pipe}` lists them", pipe=pipe)
        n = await store.retry_units(pipe, list(keys) if keys else None)
        await store.log_event(pipe, "-", "units-retried", {"units": n, "keys": list(keys) if keys else None})
    return n
