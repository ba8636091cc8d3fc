"""When a pipe with work units must run again for them: its earliest ``failed`` or ``waiting``
unit's due time (DIL: a failed unit retries alone after its backoff; an asynchronous job not
ready in one run is polled again when its poll is due), read from the ledger."""

from __future__ import annotations

from runtime.config.models import PipeSpec
from runtime.pipes import strategy_of
from runtime.store import StateStore

MIN_GAP_S = 1.0
"""A unit already due when a run ends (e.g. one ``max_units_per_run`` left for later) starts the
next run no sooner than this many seconds after it, so runs never follow each other back to back."""

DUE_STATUSES = ("failed", "waiting")


async def next_unit_due(store: StateStore, spec: PipeSpec) -> float | None:
    """Unix time (seconds) the pipe's earliest failed or waiting unit comes due (a unit without a
    due time is due at once: 0.0); None when it has none, or its source has no work units.
    ``dead`` units wait for an operator (``sluice units retry``) and never count."""
    if strategy_of(spec.source) != "units":
        return None
    counts = await store.unit_counts(spec.id)
    dues = [u.due_us or 0 for status in DUE_STATUSES if counts.get(status)
            for u in await store.work_units(spec.id, status=status)]
    return min(dues) / 1e6 if dues else None
