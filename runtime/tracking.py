"""Dependency tracking of a pipe run (Sesam ``hub/features/dependency-tracking.rst``, seed 004).

A pipe whose source is a ``dataset`` source and whose first transform is a ``dtl`` transform
with hops tracks the datasets those hops join (all but ``"track-dependencies": false``). While
it runs, the transform records per source entity what its hops looked up
(:mod:`runtime.dtl.hops`); the pipe keeps a **tracking offset** per hopped-to dataset. A run:

* **incremental** (partial rescans too): before reading, finds the source entities whose
  recorded look-ups are touched by the hopped-to datasets' versions after their tracking offsets
  up to their committed offsets now (:meth:`StateStore.tracked_sources`); after its ordinary
  read it puts their latest versions through the pipe again, and its final checkpoint moves the
  tracking offsets to the offsets taken at its start. A run that fails or stops commits none of
  them, so the next run finds the same entities again (at-least-once; the dataset sink's hash
  dedupe makes a repeat free). A change committed while the run runs lies above the offsets it
  commits: the next run tracks it.
* **full**: reads everything anyway; its full-run marker commits the offsets taken at its start,
  so a resumed full run keeps them, and the changes made while it runs are tracked afterwards.

More pending entities than ``dependency_tracking.dependency_warning_threshold`` (10,000) log a
warning, more than ``dependency_error_threshold`` (50,000) fail the run before it processes
anything (:class:`DependencyTrackingError`); both name the hop and the join values with the most
matches, the usual cause being a join on a blank or shared value (Sesam's users call this
failure hard to debug).

Why no version below a tracking offset is needed, and compaction of a hopped-to dataset is not
held for it: the look-ups record the ids found, so an entity that changed is matched by its id,
whatever join value it had before; and an entity that now joins is matched by its current keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import structlog

from runtime.config.models import DependencyTrackingConfig
from runtime.dtl.joinkeys import describe_key
from runtime.errors import DependencyTrackingError
from runtime.store.protocol import FOUND, PipeState, StateStore

log = structlog.get_logger("sluice.tracking")

TOP_JOINS = 5  # join values named by a threshold message, per dataset


@dataclass(frozen=True)
class TrackingPlan:
    """What dependency tracking adds to a run.

    Attributes:
        pending: source entity ids to put through the pipe again, sorted.
        offsets: the tracking offsets the run commits (hopped-to dataset -> offset); None when
            it commits none (a resumed full run: its marker committed them).
    """

    pending: list[str]
    offsets: dict[str, int] | None


async def plan(store: StateStore, pipe: str, datasets: dict[str, str], state: PipeState, *,
               full: bool, resumed: bool, limits: DependencyTrackingConfig) -> TrackingPlan:
    """The tracking of a run of ``pipe``, whose hops track ``datasets`` (dataset -> the position of
    its hop, for messages), from the pipe's stored ``state``.

    A dataset with no tracking offset yet (a new pipe, or a hop added to a pipe that ran before)
    starts being tracked at this run; for a pipe that ran before, a warning says that entities
    processed earlier are tracked only after a full run.

    Raises:
        DependencyTrackingError: more pending entities than the error threshold.
        StoreError: from the store.
    """
    if resumed:
        return TrackingPlan([], None)
    now: dict[str, int] = {}
    for dataset in datasets:
        info = await store.dataset_info(dataset)
        now[dataset] = info.committed if info is not None else -1
    if full:
        return TrackingPlan([], now)
    pending: set[str] = set()
    cap = limits.dependency_error_threshold + 1
    windows = {}
    for dataset, where in datasets.items():
        after = state.tracking.get(dataset)
        if after is None:
            if state.since is not None:
                log.warning("tracking.started", dataset=dataset, hop=where,
                            reason="entities processed before this run are tracked only after a full run "
                                   "(sluice run --full)")
            continue
        if now[dataset] > after:
            windows[dataset] = after
            pending.update(await store.tracked_sources(pipe, dataset, after, now[dataset], cap))
    if len(pending) > limits.dependency_warning_threshold:
        causes = await _causes(store, pipe, datasets, windows, now)
        if len(pending) > limits.dependency_error_threshold:
            raise DependencyTrackingError(
                f"dependency tracking: more than {limits.dependency_error_threshold:,} source entities "
                f"are pending (dependency_tracking.dependency_error_threshold); the join values with "
                f"the most matches: {causes}. A join on a blank or shared value joins too much: make "
                "its key unique (e.g. with tuples), set \"track-dependencies\": false on that hop, raise "
                "the threshold, or run the pipe with --full (it reprocesses everything and resets the "
                "tracking offsets)", pipe=pipe)
        log.warning("tracking.many_pending", pending=len(pending),
                    threshold=limits.dependency_warning_threshold, causes=causes)
    return TrackingPlan(sorted(pending), now)


async def _causes(store: StateStore, pipe: str, datasets: dict[str, str], windows: dict[str, int],
                  now: dict[str, int]) -> str:
    """The look-ups matching the most pending entities, e.g. ``addresses.customer_id = ''
    (hop rules.default[1][1]): 48,000 entities``, most first."""
    found: list[tuple[int, str]] = []
    for dataset, after in windows.items():
        for path, key, n in await store.tracked_joins(pipe, dataset, after, now[dataset], TOP_JOINS):
            what = (f"entity {key!r} of {dataset}" if path == FOUND
                    else f"{dataset}.{'.'.join(orjson.loads(path))} = {describe_key(key)}")
            found.append((n, f"{what} (hop {datasets[dataset]}): {n:,} entities"))
    found.sort(key=lambda f: -f[0])
    return "; ".join(text for _, text in found[:TOP_JOINS]) or "none recorded"
