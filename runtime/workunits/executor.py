"""The unit executor: runs a pipe's due work units with bounded parallelism and pacing (DIL).

It sits beside :class:`~runtime.pipes.PipeRun`, which calls :meth:`UnitRunner.run` in place of
``source.read()``. Each unit's pages reach the pipe as :class:`UnitChunk` s carrying the unit's
progress, which the sink commits in the transaction of the page's entities: a crash resumes a unit
at its last committed page. A unit that fails records ``failed`` (due again after an exponential
backoff) or, after ``max_attempts``, ``dead``, through the same path; it never fails the run or the
other units.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog

from runtime.components import RunInfo, Source, closing
from runtime.errors import SluiceError
from runtime.store.protocol import StateStore, UnitProgress, WorkUnit
from runtime.workunits.model import Unit, UnitPage, WorkUnitsConfig
from runtime.workunits.planning import Part, plan

log = structlog.get_logger("sluice.units")

CLAIM_BATCH = 500
LEASE_S = 300.0
SETTLE_POLL_S = 0.05
"""How often a cluster member's run with nothing to claim looks whether its ended units committed."""


class UnitChunk(list[Any]):
    """Entities of one unit's page, with the progress of the units they complete (key -> progress)."""

    def __init__(self, entities: list[Any], progress: dict[str, UnitProgress]) -> None:
        super().__init__(entities)
        self.progress = progress


@dataclass
class UnitTally:
    """What a run did with its units: how many ended in each status, and the planning counts."""

    done: int = 0
    failed: int = 0
    waiting: int = 0
    dead: int = 0
    planned: int = 0
    added: int = 0
    retired: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {"done": self.done, "failed": self.failed, "waiting": self.waiting, "dead": self.dead,
                "planned": self.planned, "added": self.added, "retired": self.retired}


def now_us() -> int:
    return time.time_ns() // 1000


def merge_progress(into: dict[str, UnitProgress], later: dict[str, UnitProgress]) -> None:
    """Add ``later`` progress to ``into`` (both key -> progress, in commit order): a later status
    wins, but a failure keeps the checkpoint and watermark the unit reached before it, so the
    unit resumes there."""
    for key, p in later.items():
        before = into.get(key)
        if before is not None and p.status in ("failed", "dead"):
            p = replace(p, checkpoint=before.checkpoint, watermark=p.watermark or before.watermark)
        into[key] = p


class UnitRunner:
    """Plans, claims and runs the units of one pipe run.

    Args:
        source: the pipe's source; it reads one unit with ``read_unit(unit)``.
        config: its ``work_units`` config.
        store: the state store (the ledger).
        pipe: the pipe ``_id``.
        run: the run; ``run.sweep`` set makes it (part of) a full sweep.
        owner: lease owner (the run id).
    """

    def __init__(self, source: Source, config: WorkUnitsConfig, store: StateStore, pipe: str,
                 run: RunInfo, owner: str) -> None:
        self.source, self.config, self.store, self.pipe = source, config, store, pipe
        self.run_info, self.owner = run, owner
        self.tally = UnitTally()
        self._last_start = 0.0
        self._running = 0
        self._claimed: set[str] = set()
        self._ended = anyio.Event()  # set when a unit ends or commits; replaced by the claim loop after each wait

    async def run(self, emit: Callable[[UnitChunk], Awaitable[None]], stop: anyio.Event) -> UnitTally:
        """Run every unit due, sending each page through ``emit``; returns the tally.

        Stops claiming when ``stop`` is set (running units finish their current page and resume
        next run). Raises only for a failure of the store or of planning (a bad input dataset).
        """
        planned = await self._close_unchanged(await plan(self.config, self.store, pipe=self.pipe))
        self.tally.planned = len(planned)
        self.tally.added, self.tally.retired = await self.store.plan_units(self.pipe, planned)
        await self.store.prepare_units(self.pipe, sweep=self.run_info.sweep)
        limit = self.config.max_units_per_run
        started = 0
        limiter = anyio.Semaphore(self.config.max_concurrent_units)  # released by the unit's own task
        wait_until = time.monotonic() + self.config.max_wait_in_run_s
        async with anyio.create_task_group() as tg:
            while not stop.is_set() and (limit is None or started < limit):
                want = CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - started)
                claimed = await self.store.claim_units(self.pipe, self.owner, limit=want, lease_s=LEASE_S)
                self._claimed.update(u.key for u in claimed)
                if not claimed:
                    if self._running:  # claim again when one ends: a failed one may be due again
                        await self._ended.wait()
                        self._ended = anyio.Event()
                        continue
                    if await self._due_soon(wait_until) or await self._settling():
                        await anyio.sleep(SETTLE_POLL_S)
                        continue
                    break
                for unit in claimed:
                    await limiter.acquire()
                    if stop.is_set():
                        limiter.release()
                        break
                    await self._pace()
                    started += 1
                    self._running += 1
                    tg.start_soon(self._unit, unit, emit, limiter, name=f"{self.pipe}/unit:{unit.key}")
        return self.tally

    def committed(self) -> None:
        """The sink committed units' progress: claim again now. In a cluster member a unit's
        share of the pipe's concurrency limit is freed by that commit, not when its task ends
        (its last progress may still be on its way to the sink), so claiming only when a task
        ends would leave the freed share idle until the next unit ends."""
        self._ended.set()

    async def _close_unchanged(self, planned: list[Part]) -> list[Part]:
        """``planned`` with the done units the source finds unchanged marked closed (see
        :meth:`Source.unit_unchanged`): one read of the ledger, no claim and no commit per unit."""
        if type(self.source).unit_unchanged is Source.unit_unchanged or self.run_info.rescan:
            return planned
        done = {u.key: u.watermark for u in await self.store.work_units(self.pipe, status="done")}
        unchanged = self.source.unit_unchanged
        return [(key, variables, closed or (key in done and unchanged(variables, done[key])))
                for key, variables, closed in planned]

    async def _due_soon(self, wait_until: float) -> bool:
        """Whether a failed or waiting unit comes due before the run's waiting budget ends."""
        remaining = wait_until - time.monotonic()
        if remaining <= 0:
            return False
        horizon = now_us() + int(remaining * 1e6)
        for status in ("failed", "waiting"):
            if any((u.due_us or 0) <= horizon for u in await self.store.work_units(self.pipe, status=status)):
                return True
        return False

    async def _settling(self) -> bool:
        """In a cluster member: whether units this run ran are still ``running`` in the ledger
        (their last progress is on its way to the sink, and sent at once there): until it
        commits they count against the pipe's concurrency limit, so claim again after. Also
        whether units are still ``pending``: the other members hold the whole limit now, and
        this member claims as soon as a slot frees, rather than at its next heartbeat."""
        if getattr(self.store, "cluster", None) is None:
            return False
        if (await self.store.unit_counts(self.pipe)).get("pending", 0):
            return True
        return any(u.key in self._claimed for u in await self.store.work_units(self.pipe, status="running"))

    async def _pace(self) -> None:
        gap = self.config.unit_interval_s - (time.monotonic() - self._last_start)
        if gap > 0 and self._last_start:
            await anyio.sleep(gap)
        self._last_start = time.monotonic()

    async def _unit(self, row: WorkUnit, emit: Callable[[UnitChunk], Awaitable[None]],
                    limiter: anyio.Semaphore) -> None:
        sweep = self.run_info.sweep
        whole = sweep is not None or self.run_info.rescan  # a sweep or a rescan ignores watermarks
        unit = Unit(row.key, row.variables, row.checkpoint, None if whole else row.watermark, row.attempts)
        watermark = unit.watermark
        try:
            with structlog.contextvars.bound_contextvars(unit=row.key):
                page: UnitPage
                async with closing(self.source.read_unit(unit)) as pages:
                    async for page in pages:
                        if page.watermark is not None:
                            watermark = page.watermark
                        if page.wait_until_us is not None:
                            waiting = UnitProgress("waiting", page.checkpoint, page.watermark,
                                                   due_us=page.wait_until_us)
                            await emit(UnitChunk(page.entities, {row.key: waiting}))
                            self.tally.waiting += 1
                            return
                        await emit(UnitChunk(page.entities, {row.key: UnitProgress("running", page.checkpoint,
                                                                                   page.watermark)}))
            await emit(UnitChunk([], {row.key: UnitProgress("done", None, watermark, swept=sweep)}))
            self.tally.done += 1
        except Exception as exc:  # one unit failing never fails the others
            await self._failed(row, exc, emit)
        finally:
            self._running -= 1
            limiter.release()
            self._ended.set()

    async def _failed(self, row: WorkUnit, exc: BaseException, emit: Callable[[UnitChunk], Awaitable[None]]) -> None:
        attempts = row.attempts + 1
        dead = attempts >= self.config.max_attempts
        delay = min(self.config.retry_backoff_s * 2 ** (attempts - 1), self.config.max_retry_backoff_s)
        error = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        status = "dead" if dead else "failed"
        await emit(UnitChunk([], {row.key: UnitProgress(status, error=error, due_us=now_us() + int(delay * 1e6))}))
        setattr(self.tally, status, getattr(self.tally, status) + 1)
        self.tally.errors[row.key] = error
        log.warning(f"unit.{status}", unit=row.key, attempts=attempts, error=error)
        await self.store.log_event(self.pipe, self.owner, f"unit-{status}",
                                   {"unit": row.key, "attempts": attempts, "error": error})
