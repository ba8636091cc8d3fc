"""The daemon's lifecycle: HTTP server plus scheduler, clean stop, config reload.

* Start: listen (the ready file and a log line give the port), then start every pump.
* Stop (:meth:`Daemon.request_stop`, SIGTERM, SIGINT): pumps stop; running runs stop cleanly,
  batches in flight commit (bounded by ``shutdown_timeout_s``); the HTTP server closes. The caller
  (``Runtime``) closes the systems and the store.
* Reload (:meth:`Daemon.reload`, SIGHUP, ``POST /api/config/reload``): the config directory is
  validated first; an invalid one is refused (every problem reported) and the running config
  kept. A valid one replaces it: pumps stop cleanly, systems are reopened, pumps restart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import structlog
from aiohttp import web

from runtime import metrics
from runtime.cluster import ClusterMember
from runtime.config import load_config
from runtime.config.models import PipeSpec
from runtime.daemon.app import AccessLogger, build_app
from runtime.daemon.settings import DaemonSettings
from runtime.errors import ConfigError, SluiceError
from runtime.pipes import RunResult
from runtime.pump import Scheduler
from runtime.store import SqliteStore
from runtime.store.postgres import PostgresStore

log = structlog.get_logger("sluice.daemon")


class Daemon:
    """One ``sluice serve`` process around an open :class:`~runtime.runtime.Runtime`.

    Args:
        runtime: an open Runtime (config loaded, store and systems open).
        settings: daemon settings.
    """

    def __init__(self, runtime: Any, settings: DaemonSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.tokens = settings.tokens()
        self.scheduler: Scheduler | None = None
        self.port: int | None = None
        self.started_at = time.time()
        self.reloads = 0
        self._stop = anyio.Event()
        self._reload_lock = anyio.Lock()
        self._tg: Any = None
        self.receiver_locks: dict[str, anyio.Lock] = {}
        self.publish_gate = anyio.Semaphore(settings.publisher_concurrency)
        self.read_store: Any = runtime.store
        self.cluster: ClusterMember | None = None
        if isinstance(runtime.store, PostgresStore):
            self.cluster = ClusterMember(runtime.store, settings.cluster_lease_s, self._join, self._changed)
            self.cluster.configure(runtime.config)

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop cleanly (idempotent; safe from a signal handler)."""
        self._stop.set()

    def _new_scheduler(self) -> Scheduler:
        s = self.settings
        for pid in self.runtime.config.pipes:
            metrics.touch_pipe(pid)
        return Scheduler(
            self.runtime, debounce_s=s.signal_debounce_s, backoff_s=s.retry_backoff_s,
            backoff_max_s=s.retry_backoff_max_s, on_start=self._on_start, on_finish=self._on_finish,
            leader=lambda: self.cluster is None or self.cluster.leader,
        )

    def _join(self, pipe: str) -> None:
        if self.scheduler is not None:
            self.scheduler.join(pipe)

    def _changed(self, dataset: str) -> None:
        if self.scheduler is not None:
            self.scheduler.signal([dataset])

    def _on_start(self, spec: PipeSpec) -> None:
        metrics.RUNNING.labels(spec.id).set(1)

    def _on_finish(self, spec: PipeSpec, result: RunResult) -> None:
        metrics.RUNNING.labels(spec.id).set(0)
        metrics.observe_run({**result.summary(), "pipe": spec.id}, finished_at=time.time())

    async def serve(
        self, *, handle_signals: bool = False, on_ready: Callable[[int], None] | None = None
    ) -> None:
        """Serve until :meth:`request_stop` (or SIGTERM/SIGINT when ``handle_signals``).

        Raises:
            SluiceError: the port cannot be bound (names host and port).
        """
        if self.settings.api_auth and not self.tokens:
            log.warning("daemon.no_tokens", hint="set api_tokens or SLUICE_ADMIN_TOKEN; the API "
                        "answers 401 to everything but /api/health until then")
        await self._open_read_store()
        runner = web.AppRunner(build_app(self), access_log_class=AccessLogger, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            try:
                await site.start()
            except OSError as exc:
                raise SluiceError(
                    f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}; "
                    "choose another --port or stop the process using it") from exc
            self.port = int(runner.addresses[0][1])
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.cluster is not None:
                    self.cluster.configure(self.runtime.config, self.port)
                    await tg.start(self.cluster.run, name="cluster")
                self.scheduler = self._new_scheduler()
                await tg.start(self.scheduler.run, name="scheduler")
                if handle_signals:
                    self._install_signals()
                self._announce(on_ready)
                await self._stop.wait()
                log.info("daemon.stopping")
                async with self._reload_lock:
                    await self.scheduler.stop(self.settings.shutdown_timeout_s)
                if self.cluster is not None:
                    await self.cluster.leave()
                tg.cancel_scope.cancel()
        finally:
            if handle_signals:
                self._remove_signals()
            await runner.cleanup()
            if self.read_store is not self.runtime.store:
                await self.read_store.close()
            log.info("daemon.stopped")

    async def _open_read_store(self) -> None:
        """Publishers read through a connection of their own (SQLite: a second reader on the same
        file, WAL), so long streams never queue in front of the service API's store reads."""
        store = self.runtime.store
        if isinstance(store, SqliteStore):
            self.read_store = SqliteStore(store.path)
            await self.read_store.open()

    def _announce(self, on_ready: Callable[[int], None] | None) -> None:
        host, port = self.settings.host, self.port
        log.info("daemon.listening", host=host, port=port, pipes=len(self.runtime.config.pipes))
        if self.settings.ready_file is not None:
            tmp = self.settings.ready_file.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"host": host, "port": port, "pid": os.getpid()}))
            tmp.replace(self.settings.ready_file)
        if on_ready is not None and port is not None:
            on_ready(port)

    def _install_signals(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._tg.start_soon(self._reload_logged, name="reload"))

    def _remove_signals(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("daemon.reload_refused", problems=[str(p) for p in exc.problems])
        except SluiceError as exc:
            log.error("daemon.reload_failed", error=str(exc))

    async def reload(self) -> dict[str, Any]:
        """Reload the config directory (see the module docstring).

        Returns:
            ``{"reloaded": true, "pipes": [...]}``.

        Raises:
            ConfigError: the new config is invalid; nothing changed.
            SluiceError: a system of the new config failed to open; the old config was restored.
        """
        rt = self.runtime
        async with self._reload_lock:
            if self._stop.is_set():
                raise SluiceError("the daemon is stopping; reload refused")
            new = load_config(rt.config_dir, rt.registry, rt.secrets)
            assert self.scheduler is not None  # serve() created it before signals or routes exist
            await self.scheduler.stop(self.settings.shutdown_timeout_s)
            old = rt.config
            try:
                await self._swap(new)
            except BaseException:
                await self._swap(old)
                raise
            finally:
                self.scheduler = self._new_scheduler()
                await self._tg.start(self.scheduler.run, name="scheduler")
            self.reloads += 1
            log.info("daemon.reloaded", pipes=len(new.pipes), systems=len(new.systems))
            return {"reloaded": True, "pipes": list(new.pipes)}

    async def _swap(self, config: Any) -> None:
        rt = self.runtime
        for system in rt.systems.values():
            with anyio.CancelScope(shield=True):
                await system.close()
        rt.systems.clear()
        rt.config = config
        if self.cluster is not None:
            self.cluster.configure(config)
        for spec in config.systems.values():
            system = spec.cls(spec.config, spec.id)
            await system.open()
            rt.systems[spec.id] = system
