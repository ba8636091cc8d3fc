"""The ``rest`` source over work units (DIL's work units and watermarks, ``dil.md`` §1, §2, §5.4).

One unit is one paging sequence of the source's operation, its templates seeing the unit's
variables as ``unit`` (``{{ unit._id }}``, ``{{ unit.window_start }}``) and its key as
``unit_key``. The unit's watermark is its ``since``: ``{{ since }}`` in the templates, and sent as
``since_property_name`` when ``supports_since`` is set, exactly as a pipe's since is without work
units; None on the unit's first read and in a full sweep, so the unit reads its whole range.

Every page becomes a :class:`~runtime.workunits.UnitPage` whose checkpoint (JSON, committed with
the page's entities) is::

    {"since": <the since this read started from>, "next": <the next page's request, or null
     after the last page>, "paging": <the paginator's counters>, "watermark": <highest so far>}

so a unit interrupted anywhere resumes at its next page with the query it started with (never a
page already committed asked for again, and the announced-total check still counts the pages
before), and a unit whose last page was committed asks for nothing more; a checkpoint of another
shape (the paging type changed since) starts the unit again at its first page. The watermark is the
highest ``_updated`` (``updated_expression``) the unit has seen, combined with the one it had,
datetime strings compared by instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import structlog

from connectors.rest.paging import PageRequest, make_paginator, paginator_type
from runtime.errors import BadDataError
from runtime.sinces import since_order
from runtime.workunits import Unit, UnitPage

if TYPE_CHECKING:
    from connectors.rest.source import RestSource

log = structlog.get_logger("sluice.rest")
CHECKPOINT_KEYS = frozenset({"since", "next", "paging", "watermark"})


async def read_unit(source: RestSource, unit: Unit) -> AsyncIterator[UnitPage]:
    """The pages of ``unit``, from its checkpoint on (see the module docstring).

    Raises:
        BadDataError: a bad page (see :meth:`RestSource.pages`), or ``_updated`` values of the
            unit that cannot be ordered.
    """
    paging = source.operation.paging
    resumed = resume_point(unit, paginator_type(paging).STATE)
    if resumed is not None and resumed["next"] is None:
        return  # every page was committed before the unit could be marked done
    since = resumed["since"] if resumed is not None else unit.watermark
    watermark = highest(unit.watermark, [resumed["watermark"]] if resumed else [], unit.key)
    context = {"unit": unit.variables, "unit_key": unit.key}
    call = source.first_call(since, context)
    paginator = make_paginator(paging, call.url)
    if resumed is not None:
        paginator.restore(resumed["paging"])
        request = PageRequest.from_json(resumed["next"])
    else:
        request = paginator.first()
    async for entities, following in source.pages(call, paginator, request, context):
        watermark = highest(watermark, (e.get("_updated") for e in entities), unit.key)
        checkpoint = {"since": since, "next": following.to_json() if following is not None else None,
                      "paging": paginator.state(), "watermark": watermark}
        yield UnitPage(entities, checkpoint, watermark)


def resume_point(unit: Unit, state_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The unit's checkpoint when it is one this module wrote for the current paging type, else
    None: a checkpoint of another shape (the paging type or the source's mode changed since it
    was committed) is logged and the unit starts again at its first page, which only costs
    requests (an unchanged record's write is a no-op)."""
    checkpoint = unit.checkpoint
    if checkpoint is None:
        return None
    if (isinstance(checkpoint, dict) and checkpoint.keys() >= CHECKPOINT_KEYS
            and isinstance(checkpoint["paging"], dict) and checkpoint["paging"].keys() >= set(state_keys)):
        return checkpoint
    log.warning("unit.checkpoint_ignored", unit=unit.key,
                reason="not a checkpoint of this paging; the unit starts at its first page")
    return None


def highest(current: Any, values: Iterable[Any], key: str) -> Any:
    """The highest of ``current`` and ``values`` (None ignored), datetime strings by instant.

    Raises:
        BadDataError: two values cannot be compared (e.g. a number and a string).
    """
    for value in values:
        if value is None:
            continue
        try:
            if current is None or since_order(value) > since_order(current):
                current = value
        except TypeError:
            raise BadDataError(
                f"work unit {key!r}: _updated values {current!r} and {value!r} cannot be ordered, so the "
                "unit has no watermark; make updated_expression give one kind of value",
                location=f"unit {key!r}") from None
    return current
