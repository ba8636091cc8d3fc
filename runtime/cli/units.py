"""``sluice units PIPE [--status S]`` and ``sluice units retry PIPE [KEY...]``: a pipe's work units
(DIL) as the ledger holds them, and the operator's retry of dead and failed ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import humanize
import orjson

from runtime.cli.display import table
from runtime.cli.options import Settings, common_options, out, run_async
from runtime.errors import OperationRefusedError
from runtime.runtime import retry_units
from runtime.store import StateStore, WorkUnit
from runtime.store.protocol import UNIT_STATUSES

COLUMNS = ["key", "status", "attempts", "watermark", "due", "last error"]


class _ListByDefault(click.Group):
    """A group whose first argument, when it is no subcommand, goes to ``list``: ``sluice units
    PIPE`` is ``sluice units list PIPE`` (a pipe named ``retry`` or ``list`` needs the latter)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(name="units", cls=_ListByDefault, short_help="A pipe's work units; retry dead or failed ones.")
def units_cmd() -> None:
    """`sluice units PIPE [--status S]`: the pipe's work units; `sluice units retry PIPE [KEY...]`:
    dead or failed units back to pending."""


@units_cmd.command(name="list")
@click.argument("pipe")
@click.option("--status", type=click.Choice(UNIT_STATUSES), default=None,
              help="Only units in this status (retired: units whose input value is gone).")
@common_options
def list_units(pipe: str, status: str | None, settings: Settings) -> None:
    """A table of PIPE's work units (key, status, attempts, watermark, when a failed or waiting
    unit is due, last error) and their counts by status. Read-only: works while the pipe runs."""

    async def go() -> int:
        settings.announce()
        async with settings.open_store() as store:
            counts = await _counts(store, pipe, settings)
            found = await store.work_units(pipe, status=status)
        title = f"work units of pipe {pipe}" + (f" ({status})" if status else "")
        out.print(table(title, COLUMNS, [_row(u) for u in found]))
        by_status = ", ".join(f"{s} {counts[s]}" for s in UNIT_STATUSES if counts.get(s))
        out.print(f"{sum(counts.values())} units: {by_status}")
        return 0

    run_async(go())


@units_cmd.command(name="retry")
@click.argument("pipe")
@click.argument("keys", nargs=-1)
@common_options
def retry(pipe: str, keys: tuple[str, ...], settings: Settings) -> None:
    """Put PIPE's dead and failed work units (every one, or those of KEYS) back to pending, with
    their attempts cleared; the next run reads them from where they failed. Holds the pipe's lock:
    refused (exit 1, naming the run) while the pipe runs."""

    async def go() -> int:
        async with settings.open_store() as store:
            n = await retry_units(store, pipe, keys or None)
        rest = " (the others named are not dead or failed)" if keys and n < len(set(keys)) else ""
        out.print(f"pipe {pipe}: {n} work unit{'' if n == 1 else 's'} back to pending{rest}")
        return 0

    run_async(go())


async def _counts(store: StateStore, pipe: str, settings: Settings) -> dict[str, int]:
    """The pipe's unit counts by status.

    Raises:
        OperationRefusedError: the store holds no unit of the pipe (names the store).
    """
    counts = await store.unit_counts(pipe)
    if not counts:
        raise OperationRefusedError(
            f"has no work units in {settings.store_label()}: it has not run yet, its source has no "
            "work_units, or the pipe id or --data-dir is wrong", pipe=pipe)
    return counts


def _row(unit: WorkUnit) -> list[Any]:
    due = _due(unit.due_us) if unit.status in ("failed", "waiting") else ""
    watermark = "" if unit.watermark is None else orjson.dumps(unit.watermark).decode()
    return [unit.key, unit.status, unit.attempts, watermark, due, unit.last_error or ""]


def _due(due_us: int | None) -> str:
    """``2026-12-02 01:40:00 UTC (4 minutes from now)``; ``now`` when unset (due at once)."""
    if due_us is None:
        return "now"
    due = datetime.fromtimestamp(due_us / 1e6, UTC)
    return f"{due:%Y-%m-%d %H:%M:%S} UTC ({humanize.naturaltime(datetime.now(UTC) - due)})"
