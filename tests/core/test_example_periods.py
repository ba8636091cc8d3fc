"""The periodic-entities example (config/examples/dtl-periods, Sesam seeds 000/001): it runs as
the README says, and a late-arriving version re-derives, through dependency tracking on an
incremental run, the periods of its subscription, changing exactly the months it affects.

The oracle is computed here in Python from the example's files: a month's plan is that of the
subscription's latest version valid from on or before the month's first day."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "dtl-periods"
SLUICE = str(Path(sys.executable).parent / "sluice")


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def expected(root: Path) -> dict[str, str | None]:
    history = read_ndjson(root / "data" / "history.ndjson")
    out = {}
    for period in read_ndjson(root / "data" / "periods.ndjson"):
        valid = [h for h in history
                 if h["subscription"] == period["subscription"] and h["valid_from"] <= period["month"]]
        out[period["id"]] = max(valid, key=lambda h: h["valid_from"])["plan"] if valid else None
    return out


def plans(entities: list[dict[str, Any]]) -> dict[str, str | None]:
    return {e["_id"]: e.get("plan") for e in entities if not e.get("_deleted")}


def test_the_example_runs_as_the_readme_says(tmp_path: Path) -> None:
    data = tmp_path / "state"
    run = subprocess.run([SLUICE, "run", str(EXAMPLE), "--data-dir", str(data)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    listed = subprocess.run([SLUICE, "entities", "period-plans", "--data-dir", str(data)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    got = plans([orjson.loads(line) for line in listed.stdout.splitlines()])
    assert got == expected(EXAMPLE) and len(got) == 36
    assert got["s1/2024-04"] == "plus" and got["s2/2024-01"] is None  # no version valid yet


async def test_a_late_arriving_version_re_derives_exactly_the_periods_it_affects(tmp_path: Path) -> None:
    root = tmp_path / "dtl-periods"
    shutil.copytree(EXAMPLE, root)
    history = root / "data" / "history.ndjson"
    async with Runtime(root, data_dir=tmp_path / "state") as rt:
        for pipe in ("plan-history", "periods", "period-plans"):
            assert (await rt.run_pipe(pipe)).ok
        assert plans(await rt.entities("period-plans")) == expected(root)

        # s1 turns out to have been on "silver" from 2024-01-20 (before the "plus" of 2024-04-01)
        late = {"id": "s1@2024-01-20", "subscription": "s1", "valid_from": "2024-01-20", "plan": "silver"}
        history.write_bytes(history.read_bytes() + orjson.dumps(late) + b"\n")
        assert (await rt.run_pipe("plan-history")).new == 1
        before = plans(await rt.entities("period-plans"))
        result = await rt.run_pipe("period-plans")
        assert result.ok and result.kind == "incremental"
        after = plans(await rt.entities("period-plans"))
        assert after == expected(root)
        assert {k for k in after if after[k] != before[k]} == {"s1/2024-02", "s1/2024-03"}
        # tracking matched the subscription's periods (its join value), not the other subscriptions'
        assert result.tracked == result.read == 12 and result.changed == 2

        # the version is withdrawn again: the months go back to "basic"
        history.write_bytes(b"".join(orjson.dumps(h) + b"\n" for h in read_ndjson(history) if h["id"] != late["id"]))
        assert (await rt.run_pipe("plan-history")).deleted == 1
        result = await rt.run_pipe("period-plans")
        assert result.ok and result.changed == 2
        assert plans(await rt.entities("period-plans")) == expected(root) == before
