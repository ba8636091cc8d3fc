"""``sluice units PIPE [--status S]`` and ``sluice units retry PIPE [KEY...]`` (issue 9 item 5):
the ledger as a table with counts by status, and the operator's retry of dead and failed units,
refused while a run holds the pipe's lock.

The units come from the work-units test source (``unit_pages``, tests/core/units_source.py), run
in this process through :class:`Runtime`; the commands run through click's runner (the listing
and retry) or as a real ``sluice`` process while this process holds the pipe's lock.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import anyio
from click.testing import CliRunner, Result

from runtime.cli.main import cli
from tests.core.units_source import Runtime, live_ids, pages, requests, units_pipe, units_registry, write_units

DAYS = {"windows": {"start": "2024-01-01", "end": "2024-01-04"}}  # three closed day windows
A, B, C = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"


def sluice(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by key: the cells of each line that starts with a unit key."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if re.match(r"\d{4}-\d\d-\d\dT", cells[0]):
            found[cells[0]] = cells
    return found


def run_pipe(cfg: Path, state: Path, times: int = 1) -> None:
    async def go() -> None:
        async with Runtime(cfg, data_dir=state, registry=units_registry()) as rt:
            for _ in range(times):
                await rt.run_pipe("survey")

    asyncio.run(go())


def failing_b(write_config, **units) -> Path:
    cfg = write_config([units_pipe({**DAYS, **units})])
    write_units(cfg, {A: {"pages": pages("a", 2)}, B: {"fail": True}, C: {"pages": pages("c", 1)}})
    return cfg


def test_units_lists_key_status_attempts_watermark_due_time_error_and_counts(tmp_path, write_config):
    cfg = failing_b(write_config, retry_backoff_s=600)
    run_pipe(cfg, tmp_path / "state")
    listed = sluice("units", "survey", "--data-dir", tmp_path / "state")
    assert listed.exit_code == 0, listed.output
    table = rows(listed.output)
    assert set(table) == {A, B, C}
    assert table[A][:5] == [A, "done", "0", "2", ""]  # watermark after 2 pages; no due time once done
    assert table[B][:3] == [B, "failed", "1"]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ minutes from now\)", table[B][4])
    assert "unit" in table[B][5] and "is down" in listed.output  # the last error
    assert "3 units: done 2, failed 1" in listed.output

    failed = sluice("units", "survey", "--status", "failed", "--data-dir", tmp_path / "state")
    assert set(rows(failed.output)) == {B} and "3 units: done 2, failed 1" in failed.output


def test_units_retry_puts_a_dead_unit_back_and_only_that_unit_runs(tmp_path, write_config):
    cfg = failing_b(write_config, max_attempts=1)
    state = tmp_path / "state"
    run_pipe(cfg, state)
    assert rows(sluice("units", "survey", "--data-dir", state).output)[B][1] == "dead"
    write_units(cfg, {A: {"pages": pages("a", 2)}, B: {"pages": pages("b", 1)}, C: {"pages": pages("c", 1)}})
    (cfg / "requests.log").unlink()

    retried = sluice("units", "retry", "survey", B, "--data-dir", state)
    assert (retried.exit_code, retried.output.strip()) == (0, "pipe survey: 1 work unit back to pending")
    assert rows(sluice("units", "survey", "--data-dir", state).output)[B][1:3] == ["pending", "0"]
    again = sluice("units", "retry", "survey", "--data-dir", state)  # nothing dead or failed is left
    assert again.output.strip() == "pipe survey: 0 work units back to pending"

    async def fixed() -> None:
        async with Runtime(cfg, data_dir=state, registry=units_registry()) as rt:
            assert (await rt.run_pipe("survey")).units["done"] == 1
            assert {"b-0-0", "b-0-1"} <= await live_ids(rt, "responses")
            events = [e for e in await rt.execution_log("survey") if e.event == "units-retried"]
            assert [e.data for e in events] == [{"units": 1, "keys": [B]}, {"units": 0, "keys": None}]

    asyncio.run(fixed())
    assert requests(cfg) == [f"{B}:0:None"]  # only the retried unit ran


def test_units_of_an_unknown_pipe_or_key_exit_1_naming_it(tmp_path, write_config):
    cfg = failing_b(write_config, max_attempts=1)
    state = tmp_path / "state"
    run_pipe(cfg, state)
    unknown = sluice("units", "surveys", "--data-dir", state)
    assert unknown.exit_code == 1
    assert "pipe 'surveys': has no work units in sqlite" in unknown.output
    bad_key = sluice("units", "retry", "survey", B, "2024-02-30", "--data-dir", state)
    assert bad_key.exit_code == 1 and "no work unit '2024-02-30'" in bad_key.output
    assert rows(sluice("units", "survey", "--data-dir", state).output)[B][1] == "dead"  # nothing changed
    assert sluice("units", "survey", "--status", "broken", "--data-dir", state).exit_code == 2


async def test_units_retry_exits_1_naming_the_run_that_holds_the_pipe(tmp_path, write_config):
    cfg = failing_b(write_config, max_attempts=1)
    state = tmp_path / "state"
    sluice_bin = str(Path(sys.executable).parent / "sluice")
    async with Runtime(cfg, data_dir=state, registry=units_registry()) as rt:
        await rt.run_pipe("survey")
        async with rt.store.pipe_lock("survey", holder="run 0123abcd4567"):  # as a run in another process
            done = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [sluice_bin, "units", "retry", "survey", "--data-dir", str(state)],
                capture_output=True, text=True, timeout=60))
        assert done.returncode == 1, done
        assert "run 0123abcd4567" in done.stderr + done.stdout
        assert (await rt.store.unit_counts("survey"))["dead"] == 1  # nothing changed under the lock
