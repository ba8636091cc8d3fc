"""Runs cut short by a dead process (SIGKILL, out of memory, power loss), recorded afterwards.

A run writes its marker (:data:`runtime.pipes.RUN_IN_PROGRESS`) into the pipe's info in the
transaction of its ``run-started`` event and clears it in the one of its end event. A marker found
while the pipe's lock is free (no process runs the pipe) belongs to a run whose process died before
it could record its end: it becomes a ``run-interrupted`` event, and the pipe's ``last_run`` says
``status: interrupted`` (Sesam shows such a run as failed; the execution log names it apart).
Everything the run committed stays; the next run resumes from the last committed checkpoint (a full
run in progress is resumed as a full run, its marker being in the stored checkpoint).

Checked by ``sluice serve`` when its pumps start (every pipe) and by :meth:`Runtime.run_pipe` once
it holds the pipe's lock (so ``sluice run`` records it before running the pipe again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from runtime.errors import OperationRefusedError
from runtime.pipes import RUN_IN_PROGRESS
from runtime.store import StateStore

log = structlog.get_logger("sluice.pump")

EVENT = "run-interrupted"
REASON = ("run interrupted: the process running it stopped before recording the end of the run "
          "(killed?); what it committed is kept, and the next run resumes from the last committed "
          "checkpoint")


async def record_interrupted(store: StateStore, pipe: str) -> dict[str, Any] | None:
    """Turn the pipe's run marker, if any, into a ``run-interrupted`` event and ``last_run``.

    Call it holding the pipe's lock (:meth:`StateStore.pipe_lock`): a marker is then a dead run's.

    Returns:
        The ``last_run`` written (``run_id``, ``status: "interrupted"``, ``full``, ``started_us``,
        ``error``), or None when the pipe has no marker. The event adds ``since`` (the committed
        checkpoint the next run resumes from) and ``full_run_in_progress``.

    Raises:
        StoreError: the store failed.
    """
    cluster = getattr(store, "cluster", None)
    if cluster is not None and pipe in cluster.shared:  # runs of work units are shared by members:
        return None  # a marker may be a live member's; a dead one's units are taken over by lease
    state = await store.pipe_state(pipe)
    marker = state.info.get(RUN_IN_PROGRESS)
    if not isinstance(marker, dict):
        return None
    run_id = str(marker.get("run_id", "-"))
    summary = {"run_id": run_id, "status": "interrupted", "full": bool(marker.get("full")),
               "started_us": marker.get("started_us"), "error": REASON}
    event = {**summary, "since": state.since, "full_run_in_progress": state.sweep is not None}

    def update(info: dict[str, Any]) -> dict[str, Any]:
        return {"last_run": summary, "runs": info.get("runs", 0) + 1, RUN_IN_PROGRESS: None}

    await store.record_run(pipe, run_id, EVENT, event, update)
    log.warning("run.interrupted", pipe=pipe, run_id=run_id, since=state.since)
    return summary


async def record_all_interrupted(store: StateStore, pipes: Iterable[str]) -> list[str]:
    """:func:`record_interrupted` for every pipe with a marker whose lock is free (a pipe another
    process is running keeps its marker); returns the pipes recorded."""
    recorded = []
    for pipe in pipes:
        if not isinstance((await store.pipe_state(pipe)).info.get(RUN_IN_PROGRESS), dict):
            continue
        try:
            async with store.pipe_lock(pipe):
                if await record_interrupted(store, pipe) is not None:
                    recorded.append(pipe)
        except OperationRefusedError:  # the lock is held: the run is alive in another process
            continue
    return recorded
