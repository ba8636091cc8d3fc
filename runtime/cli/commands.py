"""One-shot commands: run, check, pipes, datasets, entities, reset, breaker."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
import humanize
import orjson

from runtime.cli.display import RunProgress, summary_table, table
from runtime.cli.options import Settings, common_options, err, notice, out, run_async
from runtime.cli.waiting import run_waiting
from runtime.config import load_config
from runtime.heap import freeze_startup_heap
from runtime.logs import log_format
from runtime.plugins import default_registry
from runtime.runtime import breaker, reset_pipe


@click.command()
@click.argument("config_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--pipe", "pipes", multiple=True, help="Run only this pipe (repeatable).")
@click.option("--full", is_flag=True, help="Full run: ignore since, track deletions at the end.")
@click.option("--no-wait", is_flag=True,
              help="End when the pipes have run, leaving work units that wait (asynchronous jobs) waiting.")
@common_options
def run(config_dir: str, pipes: tuple[str, ...], full: bool, no_wait: bool, settings: Settings) -> None:
    """Run pipes in dependency order until none has anything left to do; then, unless --no-wait,
    wait for work units that wait (asynchronous jobs not ready yet), showing each one's state,
    and run their pipes again when they are due."""

    async def go() -> int:
        settings.announce()
        async with settings.runtime(config_dir) as rt:
            freeze_startup_heap()
            with RunProgress(err, enabled=log_format() != "json") as progress:
                if pipes:
                    results = [await rt.run_pipe(p, full=full, on_progress=progress.update) for p in pipes]
                else:
                    results = await rt.run_all(full=full, on_progress=progress.update)
                if not no_wait:
                    results += await run_waiting(rt, results, progress.update)
        out.print(summary_table(results))
        failed = [r for r in results if not r.ok]
        for r in failed:
            notice("pipe.failed", f"pipe {r.pipe} failed: {r.error}", level="error", pipe=r.pipe, error=str(r.error))
        return 1 if failed else 0

    run_async(go())


@click.command()
@click.argument("config_dir", type=click.Path(file_okay=False))
@common_options
def check(config_dir: str, settings: Settings) -> None:
    """Validate a config directory without running anything: every problem `sluice run` would
    refuse, and datasets read that no pipe writes; dependency cycles are printed as warnings."""

    async def go() -> int:
        config = load_config(config_dir, default_registry(), settings.secrets(), require_writers=True)
        for warning in config.warnings:
            err.print(f"warning: {warning}", markup=False)
        out.print(f"ok: {len(config.pipes)} pipes, {len(config.systems)} systems in {config_dir}")
        return 0

    run_async(go())


@click.command()
@click.argument("config_dir", required=False, type=click.Path(exists=True, file_okay=False))
@common_options
def pipes(config_dir: str | None, settings: Settings) -> None:
    """List pipes (of CONFIG_DIR, or every pipe with stored state) with their state."""

    async def go() -> int:
        settings.announce()
        async with settings.open_store() as store:
            states = {s.pipe: s for s in await store.pipe_states()}
            if config_dir:
                ids = list(load_config(config_dir, default_registry(), settings.secrets()).pipes)
            else:
                ids = list(states)
            rows = []
            for pid in ids:
                s = states.get(pid)
                last: dict[str, Any] = s.info.get("last_run", {}) if s else {}
                rows.append([pid, _json(s.since) if s else "", last.get("status", "never run"), _when(last),
                             last.get("read", ""), last.get("new", ""), last.get("changed", ""),
                             last.get("deleted", ""), last.get("error", "")])
            columns = ["pipe", "since", "last run", "ended", "read", "new", "changed", "deleted", "error"]
            out.print(table("pipes", columns, rows))
        return 0

    run_async(go())


@click.command()
@common_options
def datasets(settings: Settings) -> None:
    """List datasets with offsets, sizes and circuit-breaker state."""

    async def go() -> int:
        settings.announce()
        async with settings.open_store() as store:
            rows = [[d.name, d.committed, d.ids, d.deleted, "yes" if d.populated else "no",
                     f"tripped by {d.trip.pipe}, {d.held} held" if d.trip else "",
                     ", ".join(f"{pipe} (read to {off})" for pipe, off in d.compaction_held_by)]
                    for d in await store.datasets()]
        columns = ["dataset", "committed offset", "ids", "deleted", "populated", "circuit breaker",
                   "compaction held by"]
        out.print(table("datasets", columns, rows))
        return 0

    run_async(go())


@click.command()
@click.argument("dataset")
@click.option("--since", type=int, default=None, help="Only versions with offset greater than this.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--history", is_flag=True, help="Every committed version, not only the latest per _id.")
@common_options
def entities(dataset: str, since: int | None, limit: int, history: bool, settings: Settings) -> None:
    """Print a dataset's entities as JSON lines."""

    async def go() -> int:
        async with settings.open_store() as store:
            if await store.dataset_info(dataset) is None:
                notice("dataset.unknown", f"no dataset {dataset!r} in {settings.describe()}", level="error",
                       dataset=dataset, store=settings.store_label())
                return 1
            found, _ = await store.read(dataset, since=since, limit=limit, history=history)
        for entity in found:
            sys.stdout.write(orjson.dumps(entity).decode() + "\n")
        return 0

    run_async(go())


@click.command()
@click.argument("pipe")
@click.option("--config", "config_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Config directory (its disable_set_last_seen flags are honoured).")
@click.option("--since", default=None, help="Set since to this JSON value instead of clearing it.")
@common_options
def reset(pipe: str, config_dir: str | None, since: str | None, settings: Settings) -> None:
    """Reset a pipe's since: its next run is a full run (or starts at --since)."""

    async def go() -> int:
        config = load_config(config_dir, default_registry(), settings.secrets()) if config_dir else None
        async with settings.open_store() as store:
            value = orjson.loads(since) if since is not None else None
            await reset_pipe(store, pipe, config, value)
        became = "since cleared: the next run is full" if value is None else (
            f"since set to {_json(value)}: the next run reads what came after it")
        out.print(f"pipe {pipe}: {became}")
        return 0

    run_async(go())


@click.command(name="breaker")
@click.argument("action", type=click.Choice(["commit", "rollback"]))
@click.argument("dataset")
@common_options
def breaker_cmd(action: str, dataset: str, settings: Settings) -> None:
    """Commit (expose) or roll back (delete) the versions a tripped circuit breaker holds."""

    async def go() -> int:
        async with settings.open_store() as store:
            n = await breaker(store, dataset, action)
        verb = "exposed" if action == "commit" else "deleted"
        out.print(f"dataset {dataset}: circuit breaker reset, {n} held versions {verb}")
        return 0

    run_async(go())


def _when(last_run: dict[str, Any]) -> str:
    """When a run recorded in ``last_run`` (``started_us``: microseconds since the epoch, ``seconds``)
    ended, in UTC and as an age: ``2026-12-02 00:41:07 UTC (3 minutes ago)``; ``""`` if never."""
    if "started_us" not in last_run:
        return ""
    ended = datetime.fromtimestamp(last_run["started_us"] / 1e6 + last_run.get("seconds", 0), UTC)
    return f"{ended:%Y-%m-%d %H:%M:%S} UTC ({humanize.naturaltime(datetime.now(UTC) - ended)})"


def _json(value: Any) -> str:
    return "" if value is None else orjson.dumps(value).decode()
