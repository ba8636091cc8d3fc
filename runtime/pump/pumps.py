"""The scheduler: one pump task per pipe, running the pipe through :meth:`Runtime.run_pipe`.

A pump wakes for the first of: its schedule (``schedule_interval`` or ``cron_expression``), an
operator request (``start``, ``start-rescan``), a signal that an input dataset changed (debounced:
changes within ``signal_debounce_s`` go into one run), a retry of a failed run (exponential
backoff, never later than the regular schedule), or the due time of the pipe's earliest failed or
waiting work unit (:mod:`runtime.pump.units`; checked when the pump starts and after every
completed run). One run per pipe at a time: a signal arriving during a run makes one more run
afterwards.

Sesam semantics (configuration-pump.rst, scheduling-and-signalling.rst): ``mode: manual`` pipes
run only on request, ``mode: off`` pipes never; a *disabled* pipe (operator ``disable``) is not
scheduled but can be started by hand; a pipe whose sink dataset has a tripped circuit breaker is
not scheduled. Pipes whose components set ``pump_runs = False`` (publishers and receivers, whose
data moves on HTTP requests) have no pump. Run kinds (full / partial / incremental) are decided
inside :meth:`Runtime.run_pipe` (:mod:`runtime.rescans`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from runtime.config.models import PipeSpec
from runtime.errors import LeaseHeldError, OperationRefusedError, PipeTrippedError, SluiceError
from runtime.pipes import RUN_IN_PROGRESS, RunResult
from runtime.pump.interrupted import record_all_interrupted
from runtime.pump.schedule import backoff, first_regular, next_regular, soon
from runtime.pump.units import MIN_GAP_S, next_unit_due

log = structlog.get_logger("sluice.pump")

Hook = Callable[[PipeSpec, RunResult], None]


def has_pump(spec: PipeSpec) -> bool:
    """False for pipes whose data moves on HTTP requests (publishers, receivers)."""
    parts = [spec.source, *spec.transforms, spec.sink]
    return all(p.cls.pump_runs for p in parts)


class Pump:
    """The schedule and run loop of one pipe (created by :class:`Scheduler`)."""

    def __init__(self, scheduler: Scheduler, spec: PipeSpec) -> None:
        self.scheduler = scheduler
        self.spec = spec
        self.pipe = spec.id
        self.mode = spec.model.pump.mode if has_pump(spec) else "manual"
        self.disabled = False
        self.next_at: float | None = None
        self.signalled_at: float | None = None
        self.request: str | None = None
        self.failures = 0
        self.last_start: float | None = None
        self.last_end: float | None = None
        self.interrupted = False
        self.running = False
        self.stopping = False
        self.last_error: str | None = None
        self._wake = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._seen_changes = 0

    @property
    def scheduled(self) -> bool:
        """True when the schedule and signals may start runs."""
        return self.mode == "scheduled" and not self.disabled and has_pump(self.spec)

    def wake(self) -> None:
        self._wake.set()

    def start(self, *, full: bool = False) -> None:
        """Ask for a run now (``full``: a full rescan).

        Raises:
            OperationRefusedError: ``mode: off``, already running or a run already requested.
        """
        if self.spec.model.pump.mode == "off":
            raise OperationRefusedError(f"pipe {self.pipe!r} has pump.mode 'off' and cannot run", pipe=self.pipe)
        if not has_pump(self.spec):
            raise OperationRefusedError(
                f"pipe {self.pipe!r} is a publisher or receiver: its data moves on HTTP requests, "
                "there is nothing to run", pipe=self.pipe)
        if self.running or self.request is not None:
            raise OperationRefusedError(
                f"pipe {self.pipe!r} is already running or about to; wait for it or stop it first",
                pipe=self.pipe)
        self.request = "rescan" if full else "start"
        self.wake()

    def join(self) -> None:
        """Another cluster member runs this pipe's work units: take a share of them now (unless
        running, stopping, disabled or ``mode: off``)."""
        if self.running or self.request is not None or self.stopping or self.disabled \
                or self.spec.model.pump.mode == "off" or not has_pump(self.spec):
            return
        self.request = "start"
        self.wake()

    def signal(self) -> None:
        """An input dataset changed: run soon (after the debounce), if scheduled."""
        if self.scheduled and self.signalled_at is None:
            self.signalled_at = time.time() + self.scheduler.debounce_s
            self.wake()

    def stop_run(self) -> bool:
        """Ask the running run (if any) to stop cleanly; True if one was running."""
        run = self.scheduler.runtime.running.get(self.pipe)
        if run is not None:
            run.stop()
        return run is not None

    def reschedule(self) -> None:
        """Recompute the next regular run (after enable/disable)."""
        now = time.time()
        self.next_at = next_regular(self.spec, now, self.last_start) if self.scheduled else None
        self.wake()

    async def loop(self) -> None:
        """Wait for the next reason to run, run, repeat, until :meth:`Scheduler.stop`."""
        now = time.time()
        if self.scheduled and self.spec.model.pump.run_at_startup:
            self.next_at = now
        elif self.scheduled:
            self.next_at = soon(now) if self.interrupted else first_regular(
                self.spec, now, self.last_start, self.last_end)
        await self._follow_units()
        while not self.stopping:
            delay = self._delay(time.time())
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self.stopping:
                return
            full = await self._due(time.time())
            if full is not None:
                await self._run(full)

    def _delay(self, now: float) -> float:
        times = [t for t in (self.next_at, self.signalled_at) if t is not None]
        if self.request is not None:
            return 0.0
        return max(min(times) - now, 0.0) if times else float("inf")

    async def _due(self, now: float) -> bool | None:
        """Whether to run now: None (no), False (a run), True (a full rescan)."""
        if self.request is not None:
            full = self.request == "rescan"
            self.request = None
            return full
        if not self.scheduled:
            return None
        signalled = self.signalled_at is not None and now >= self.signalled_at
        timed = self.next_at is not None and now >= self.next_at
        if not (signalled or timed):
            return None
        if timed and not signalled and not self.scheduler.leader():  # the cluster's leader runs the schedule
            self.next_at = next_regular(self.spec, now, now)
            return None
        if await self.scheduler.tripped(self.spec):
            self.signalled_at = None
            self.next_at = next_regular(self.spec, now, now)
            return None
        return False

    async def _run(self, full: bool) -> None:
        started = time.time()
        self.last_start, self.signalled_at, self.running = started, None, True
        self._seen_changes = 0
        result: RunResult | None = None
        with anyio.CancelScope(shield=True) as scope:
            self._scope = scope
            try:
                self.scheduler.on_start(self.spec)
                result = await self.scheduler.runtime.run_pipe(self.pipe, full=full, on_progress=self._progress)
            except LeaseHeldError as exc:  # another cluster member runs it: not a failure
                log.info("pump.leased_elsewhere", pipe=self.pipe, reason=str(exc))
            except OperationRefusedError as exc:  # e.g. `sluice run` holds the pipe's lock
                log.warning("pump.refused", pipe=self.pipe, error=str(exc))
                self._failed(str(exc), time.time())  # retried after the backoff, not at once
            except Exception as exc:  # e.g. StoreError before the run started: keep the pump alive
                log.exception("pump.run_error", pipe=self.pipe, error=str(exc))
                self._failed(f"{type(exc).__name__}: {exc}", time.time())
            finally:
                self._scope, self.running = None, False
        if result is not None:
            self._after(result, started)
            if result.ok:  # after a failed or refused run the backoff of failed runs applies
                await self._follow_units()

    async def _follow_units(self) -> None:
        """Run sooner than scheduled when a failed or waiting work unit comes due first (not
        sooner than :data:`~runtime.pump.units.MIN_GAP_S` from now). Scheduled pumps only."""
        if not self.scheduled:
            return
        try:
            due = await next_unit_due(self.scheduler.runtime.store, self.spec)
        except SluiceError as exc:  # the store failed: the schedule goes on as it is
            log.warning("pump.units_unknown", pipe=self.pipe, error=str(exc))
            return
        if due is None:
            return
        at = max(due, time.time() + MIN_GAP_S)
        if self.next_at is None or at < self.next_at:
            self.next_at = at
            log.info("pump.units_due", pipe=self.pipe, in_s=round(at - time.time(), 3))

    def _progress(self, result: RunResult) -> None:
        if result.changes > self._seen_changes:
            self._seen_changes = result.changes
            self.scheduler.signal(self.spec.writes)

    def _after(self, result: RunResult, started: float) -> None:
        now = time.time()
        self.scheduler.on_finish(self.spec, result)
        regular = next_regular(self.spec, now, started) if self.scheduled else None
        if result.ok:
            self.failures, self.last_error, self.next_at = 0, None, regular
            return
        self._failed(str(result.error), now, retry=not isinstance(result.error, PipeTrippedError))

    def _failed(self, error: str, now: float, *, retry: bool = True) -> None:
        """Count a failure; schedule a retry after the backoff (not later than the schedule)."""
        self.failures += 1
        self.last_error = error
        regular = next_regular(self.spec, now, self.last_start) if self.scheduled else None
        if not retry or regular is None:
            self.next_at = regular
            return
        s = self.scheduler
        retry_at = now + backoff(self.failures, s.backoff_s, s.backoff_max_s)
        self.next_at = min(retry_at, regular)
        log.info("pump.retry_scheduled", pipe=self.pipe, failures=self.failures, in_s=round(retry_at - now, 3))

    def cancel_run(self) -> None:
        """Cancel the run in progress hard (after the shutdown timeout)."""
        if self._scope is not None:
            self._scope.shield = False
            self._scope.cancel()


class Scheduler:
    """Pumps of every pipe of the runtime's current config.

    Args:
        runtime: an open :class:`~runtime.runtime.Runtime`.
        debounce_s: signal debounce, seconds.
        backoff_s, backoff_max_s: retry backoff of failed runs, seconds.
        on_start, on_finish: hooks called around every run (metrics).
        leader: whether this process starts scheduled runs (in a cluster, only the member holding
            the leader lease does; signals and requests start runs on any member).
    """

    def __init__(
        self, runtime: Any, *, debounce_s: float = 0.5, backoff_s: float = 1.0,
        backoff_max_s: float = 300.0, on_start: Callable[[PipeSpec], None] | None = None,
        on_finish: Hook | None = None, leader: Callable[[], bool] | None = None,
    ) -> None:
        self.runtime = runtime
        self.leader = leader or (lambda: True)
        self.debounce_s = debounce_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.on_start = on_start or (lambda spec: None)
        self.on_finish = on_finish or (lambda spec, result: None)
        self.pumps = {pid: Pump(self, spec) for pid, spec in runtime.config.pipes.items()}
        self._done = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    def pump(self, pipe: str) -> Pump:
        """The pump of ``pipe``.

        Raises:
            OperationRefusedError: no such pipe in the running config.
        """
        found = self.pumps.get(pipe)
        if found is None:
            raise OperationRefusedError(f"no pipe {pipe!r} in the running config; check the pipe id")
        return found

    def join(self, pipe: str) -> None:
        """Another cluster member runs ``pipe``'s work units: :meth:`Pump.join` (unknown pipes
        are ignored: the members' configs may differ during a reload)."""
        if pipe in self.pumps:
            self.pumps[pipe].join()

    def signal(self, datasets: list[str]) -> None:
        """Datasets changed: signal every pipe reading one of them."""
        config = self.runtime.config
        for ds in datasets:
            for pid in config.downstream(ds):
                if pid in self.pumps:
                    self.pumps[pid].signal()

    async def tripped(self, spec: PipeSpec) -> bool:
        """True when a dataset the pipe writes has a tripped circuit breaker."""
        for ds in spec.writes:
            info = await self.runtime.store.dataset_info(ds)
            if info is not None and info.trip is not None:
                return True
        return False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every pump until :meth:`stop`; operator flags (disabled) and the last run's start
        (for cron and long intervals, see :func:`first_regular`) are read from the store, after
        runs cut short by a dead process are recorded (:mod:`runtime.pump.interrupted`)."""
        try:
            await record_all_interrupted(self.runtime.store, self.pumps)
            for pump in self.pumps.values():
                state = await self.runtime.store.pipe_state(pump.pipe)
                pump.disabled = bool(state.info.get("disabled"))
                last = state.info.get("last_run") or {}
                pump.interrupted = last.get("status") == "interrupted"
                started_us, seconds = last.get("started_us"), last.get("seconds")
                if isinstance(started_us, int):
                    pump.last_start = started_us / 1e6
                    pump.last_end = pump.last_start + seconds if isinstance(seconds, int | float) else None
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for pid, pump in self.pumps.items():
                    tg.start_soon(pump.loop, name=f"{pid}/pump")
                cluster = getattr(self.runtime.store, "cluster", None)
                if cluster is not None:
                    tg.start_soon(self._record_interrupted_later, cluster.lease_s / 3, name="interrupted")
                task_status.started()
        finally:
            self._done.set()

    async def _record_interrupted_later(self, interval_s: float) -> None:
        """In a cluster member: the markers left at start-up because their pipe's lease was held
        (by a member that died: its lease outlives it until it expires) are recorded once the
        lease is free, tried every ``interval_s`` seconds while the same marker is there (a live
        member's run clears its own at its end). Shared pipes (work units) are left out: their
        units are taken over by lease instead (:func:`record_interrupted`)."""
        store, shared = self.runtime.store, self.runtime.store.cluster.shared
        left = {pid: run_id for pid in self.pumps if pid not in shared
                and (run_id := await self._marker(pid)) is not None}
        while left:
            await anyio.sleep(interval_s)
            for pid, run_id in list(left.items()):
                if await self._marker(pid) != run_id:
                    del left[pid]  # recorded, or replaced by a run of a live member
            for pid in await record_all_interrupted(store, list(left)):
                del left[pid]
                pump = self.pumps[pid]
                pump.interrupted = True
                if pump.scheduled and not pump.running:
                    pump.next_at = soon(time.time())
                    pump.wake()

    async def _marker(self, pipe: str) -> str | None:
        """The run id in ``pipe``'s run-in-progress marker, or None when it has none."""
        marker = (await self.runtime.store.pipe_state(pipe)).info.get(RUN_IN_PROGRESS)
        return str(marker.get("run_id")) if isinstance(marker, dict) else None

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every pump: no new runs; running runs stop cleanly (batches in flight commit).

        After ``timeout_s`` the runs still going are cancelled (their uncommitted work is redone
        by the next run).
        """
        for pump in self.pumps.values():
            pump.stopping = True
            pump.stop_run()
            pump.wake()
        with anyio.move_on_after(timeout_s) as scope:
            await self._done.wait()
        if scope.cancelled_caught:
            log.warning("pump.stop_timeout", timeout_s=timeout_s)
            for pump in self.pumps.values():
                pump.cancel_run()
            await self._done.wait()
