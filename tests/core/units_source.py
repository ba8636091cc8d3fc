"""A test source with work units (``unit_pages``): pages per unit from ``data/units.json`` in the
config directory, so a test controls what every unit returns and sees what every unit was asked
for (``requests.log``). Not a mock of a server: a component written for tests, like the example
plugin's counter source.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio

from runtime import Runtime
from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.errors import TransientError
from runtime.plugins import Registry, default_registry
from runtime.workunits import Unit, UnitPage, WorkUnitsConfig


class PagesConfig(SourceConfig):
    type: Literal["unit_pages"]
    work_units: WorkUnitsConfig
    data: str = "data/units.json"


class PagesSource(Source):
    """Pages per unit from ``data``: ``{unit_key: {"pages": [[entity, ...], ...], "fail": bool,
    "fail_at": N}}``; appends ``unit:page`` to ``requests.log`` for every page it serves."""

    Config: ClassVar[type[ComponentConfig]] = PagesConfig
    config: PagesConfig
    running = 0
    peak = 0

    async def read(self, since: Any) -> AsyncIterator[list[dict]]:
        raise AssertionError("a source with work units is read unit by unit")
        yield []

    async def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        root = Path(self.context.config_dir)
        spec = json.loads((root / self.config.data).read_text()).get(unit.key, {})
        cls = type(self)
        cls.running += 1
        cls.peak = max(cls.peak, cls.running)
        try:
            await anyio.sleep(0.01)
            if spec.get("fail"):
                raise TransientError(f"unit {unit.key} is down")
            first = unit.checkpoint or 0
            for n, page in enumerate(spec.get("pages", [])[first:], start=first):
                if spec.get("fail_at") == n:
                    raise TransientError(f"page {n} of {unit.key} failed")
                with (root / "requests.log").open("a") as log:
                    log.write(f"{unit.key}:{n}:{unit.watermark}\n")
                yield UnitPage([{**e, "unit": unit.key, "vars": unit.variables} for e in page], checkpoint=n + 1,
                               watermark=n + 1)
        finally:
            cls.running -= 1


def units_registry() -> Registry:
    """The default registry with ``unit_pages`` registered (and its concurrency counters reset)."""
    reg = default_registry().clone()
    reg.register("source", "unit_pages", PagesSource)
    PagesSource.running = PagesSource.peak = 0
    return reg


def units_pipe(work_units: dict, **extra: Any) -> dict:
    return {"_id": "survey", "type": "pipe", "source": {"type": "unit_pages", "work_units": work_units},
            "sink": {"type": "dataset", "dataset": "responses", "circuit_breaker_deletion_factor": None}, **extra}


def write_units(cfg: Path, units: dict) -> None:
    (cfg / "data").mkdir(exist_ok=True)
    (cfg / "data" / "units.json").write_text(json.dumps(units))


def requests(cfg: Path) -> list[str]:
    log = cfg / "requests.log"
    return log.read_text().split() if log.exists() else []


def pages(unit: str, n: int, per: int = 2) -> list[list[dict]]:
    return [[{"_id": f"{unit}-{p}-{i}"} for i in range(per)] for p in range(n)]


async def live_ids(rt: Runtime, dataset: str) -> set[str]:
    return {e["_id"] for e in await rt.entities(dataset, limit=100_000) if not e.get("_deleted")}
