"""Planning: the work units a run's ledger must hold, from a ``work_units`` config (DIL).

Each input gives a list of *parts* (key, variables, closed); a unit is one part of each input (the
product), its key the parts' keys joined by ``|``. Planning is pure but for reading a dataset input,
which pages through the store: no cap on the number of units.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import product
from typing import Any

import orjson
from dateutil.relativedelta import relativedelta

from runtime.errors import FatalError
from runtime.store.protocol import StateStore
from runtime.workunits.model import WindowsConfig, WorkUnitsConfig, instant

Part = tuple[str, dict[str, Any], bool]
"""One input's contribution to a unit: (key part, variables, closed)."""

STEPS = {"hour": relativedelta(hours=1), "day": relativedelta(days=1), "week": relativedelta(weeks=1),
         "month": relativedelta(months=1)}
READ_PAGE = 5000


async def plan(config: WorkUnitsConfig, store: StateStore, *, pipe: str, now: datetime | None = None) -> list[Part]:
    """The units of ``config`` now: (key, variables, closed) per unit, in key order.

    Raises:
        FatalError: the input dataset has an entity without the ``key_property``.
    """
    now = now or datetime.now(UTC)
    axes: list[list[Part]] = []
    if config.dataset is not None:
        axes.append([p async for p in _dataset_parts(config, store, pipe)])
    if config.values is not None:
        axes.append([_value_part(v) for v in config.values])
    if config.windows is not None:
        axes.append(list(windows(config.windows, now)))
    units = []
    for combo in product(*axes):
        variables: dict[str, Any] = {}
        for part in combo:
            variables.update(part[1])
        units.append(("|".join(p[0] for p in combo), variables, any(p[2] for p in combo)))
    return sorted(units, key=lambda u: u[0])


async def _dataset_parts(config: WorkUnitsConfig, store: StateStore, pipe: str) -> Any:
    since: int | None = None
    assert config.dataset is not None  # checked by the caller
    while True:
        entities, end = await store.read(config.dataset, since=since, limit=READ_PAGE)
        for e in entities:
            if e.get("_deleted") is True:
                continue
            value = e.get(config.key_property)
            if value is None or isinstance(value, dict | list):
                raise FatalError(
                    f"work_units: entity {e.get('_id')!r} of dataset {config.dataset!r} has no scalar "
                    f"{config.key_property!r} to name its unit; fix the input or set key_property", pipe=pipe,
                )
            yield str(value), {k: v for k, v in e.items() if not k.startswith("_") or k == "_id"}, False
        if end is None or end == since or not entities:
            return
        since = end


def _value_part(value: str | dict[str, Any]) -> Part:
    if isinstance(value, str):
        return value, {"value": value}, False
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode(), dict(value), False


def windows(config: WindowsConfig, now: datetime) -> Iterator[Part]:
    """The windows of ``config`` up to ``now`` (or its ``end``): key = window start (ISO 8601 UTC),
    variables ``window_start``/``window_end``; a window is closed once its end has passed."""
    start = instant(config.start)
    open_end = config.end == "now"
    end = now if open_end else instant(config.end)
    step = STEPS[config.unit] * config.size
    t = start
    while t < end:
        w_end = t + step
        if not open_end:
            w_end = min(w_end, end)
        yield _iso(t), {"window_start": _iso(t), "window_end": _iso(w_end)}, w_end <= now
        t = t + step


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")

