"""Components of a pipe built outside a :class:`~runtime.pipes.PipeRun` (publishers, receivers).

A publisher or receiver request is a small run of its own: the pipe's components are built with
the same :class:`~runtime.components.ComponentContext` a pipe run gives them, opened, used for
one request, and closed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from runtime.components import ComponentContext, RunInfo
from runtime.config.models import ComponentSpec, PipeSpec


def request_run(prefix: str, *, batch_size: int, sweep: int | None = None) -> RunInfo:
    """A :class:`RunInfo` for one request (``full`` when ``sweep`` is set)."""
    return RunInfo(f"{prefix}-{uuid.uuid4().hex[:12]}", sweep is not None, sweep, batch_size)


def build(runtime: Any, pipe: PipeSpec, spec: ComponentSpec, run: RunInfo, *, store: Any = None) -> Any:
    """One component of ``pipe``, with its system and context (``store``: default the runtime's)."""
    system_id = getattr(spec.config, "system", None)
    system = runtime.systems.get(system_id) if system_id else None
    context = ComponentContext(
        pipe.id, store if store is not None else runtime.store, run, system,
        str(runtime.config_dir), pipe.model.compaction.keep_versions, tuple(pipe.writes),
    )
    return spec.cls(spec.config, context)


@asynccontextmanager
async def opened(components: list[Any]) -> AsyncIterator[list[Any]]:
    """Open components in order; close them (in reverse) on exit, also on errors."""
    async with AsyncExitStack() as stack:
        for component in components:
            await component.open()
            stack.push_async_callback(component.close)
        yield components
