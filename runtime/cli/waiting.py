"""``sluice run`` waiting for work units that wait (DIL's asynchronous jobs not ready yet): it
shows each one's state, sleeps until the first is due, and runs its pipe again (``--no-wait``
ends at once; the units wait in the ledger for a later run or the daemon's pump)."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from runtime.cli.options import notice
from runtime.pipes import RunResult
from runtime.runtime import Runtime
from runtime.store.protocol import WorkUnit


def describe(pipe: str, unit: WorkUnit, now_us: int) -> str:
    """One waiting unit for the terminal: pipe, key, job id and state (from its checkpoint), and
    when it is due, e.g. ``accounts/job: job 7500001 InProgress, next poll in 4.0 s``."""
    cp = unit.checkpoint if isinstance(unit.checkpoint, dict) else {}
    job = f"job {cp['job']} {cp.get('state', '')}".rstrip() if "job" in cp else "waiting"
    due_s = max(0.0, ((unit.due_us or now_us) - now_us) / 1e6)
    return f"{pipe}/{unit.key}: {job}, next poll in {due_s:.1f} s"


async def waiting_units(rt: Runtime, pipes: set[str]) -> dict[str, list[WorkUnit]]:
    """The waiting units of ``pipes`` (pipe -> units), pipes without any left out."""
    found = {pipe: await rt.store.work_units(pipe, status="waiting") for pipe in pipes}
    return {pipe: units for pipe, units in found.items() if units}


async def run_waiting(rt: Runtime, results: list[RunResult],
                      on_progress: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Run the pipes of ``results`` that completed with waiting units again as their units come
    due, until none waits, then the pipes with input left to read; returns those runs' results.
    A pipe whose run fails is not waited for any more."""
    more: list[RunResult] = []
    pipes = {r.pipe for r in results if r.ok}
    while waiting := await waiting_units(rt, pipes):
        now = time.time_ns() // 1000
        for pipe, units in waiting.items():
            for unit in units:
                notice("units.waiting", describe(pipe, unit, now), pipe=pipe, unit=unit.key,
                       checkpoint=unit.checkpoint, due_us=unit.due_us)
        due = min(u.due_us or now for units in waiting.values() for u in units)
        await anyio.sleep(max(0.0, (due - now) / 1e6))
        for pipe in [p for p in rt.pipe_ids() if p in waiting]:  # dependency order
            result = await rt.run_pipe(pipe, on_progress=on_progress)
            more.append(result)
            if not result.ok:
                pipes.discard(pipe)
    for pipe in rt.pipe_ids() if more else []:
        if await rt.has_pending_input(pipe):
            more.append(await rt.run_pipe(pipe, on_progress=on_progress))
    return more
