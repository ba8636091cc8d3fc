"""The example plugin's source with work units: ``example_jobs``, one asynchronous job per unit
(DIL's asynchronous ingestion, without a server), for tests of operating units in a daemon.

A unit's job is "created" on its first read and is ready after ``polls`` more reads: until then
the unit yields a page with no entities, its checkpoint (polls left) and ``wait_until_us`` set
``poll_interval_s`` ahead, so the unit ends the run ``waiting`` and the pump runs the pipe again
when it is due. A ready job yields ``rows`` entities ``{"_id": "<key>-<i>", "unit": key, "i": i}``.
``fail_while_exists: PATH`` makes the units of ``failing`` (default: every unit) fail with a
TransientError while that file exists (relative paths resolve against the config directory), so
they go ``failed`` or ``dead``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.entities import Entity
from runtime.errors import TransientError
from runtime.workunits import Unit, UnitPage, WorkUnitsConfig


class JobsSourceConfig(SourceConfig):
    """``{"type": "example_jobs", "work_units": {"values": ["a", "b"]}, "polls": 1}``.

    Attributes:
        work_units: how the work is split into units (see the ``work_units`` reference).
        rows: entities a ready job yields.
        polls: reads after the first before a job is ready (0: ready at once).
        poll_interval_s: seconds a unit waits between two reads while its job is not ready.
        fail_while_exists: a path; while that file exists the units of ``failing`` fail.
        failing: the keys of the units that fail (None: every unit).
    """

    type: Literal["example_jobs"]
    work_units: WorkUnitsConfig
    rows: int = Field(default=2, ge=0)
    polls: int = Field(default=0, ge=0)
    poll_interval_s: float = Field(default=1.0, ge=0)
    fail_while_exists: str | None = None
    failing: list[str] | None = None


class JobsSource(Source):
    """One asynchronous job per work unit (see the module docstring)."""

    Config: ClassVar[type[ComponentConfig]] = JobsSourceConfig
    config: JobsSourceConfig

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        raise NotImplementedError("example_jobs is read unit by unit (it has work_units)")
        yield []

    async def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        c = self.config
        chosen = c.failing is None or unit.key in c.failing
        if chosen and c.fail_while_exists and (Path(self.context.config_dir) / c.fail_while_exists).exists():
            raise TransientError(f"example_jobs: {c.fail_while_exists} exists; unit {unit.key} fails on purpose")
        left = c.polls if unit.checkpoint is None else unit.checkpoint["polls_left"] - 1
        if left > 0:
            wait_until_us = time.time_ns() // 1000 + int(c.poll_interval_s * 1e6)
            yield UnitPage([], checkpoint={"polls_left": left}, wait_until_us=wait_until_us)
            return
        yield UnitPage([{"_id": f"{unit.key}-{i}", "unit": unit.key, "i": i} for i in range(c.rows)])
