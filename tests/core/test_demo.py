"""The demo on real data (config/demo, Debian iso-codes 4.15.0), driven through the CLI.

Every command runs as a subprocess of the installed ``sluice`` console script, exactly as a user
types it, with ``--data-dir`` in a temporary directory. Expected numbers come from the shipped
data files themselves (249 countries, 5127 subdivisions), never from constants.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO

DEMO = REPO / "config" / "demo"
SLUICE = str(Path(sys.executable).parent / "sluice")
PIPES = ("iso-countries", "iso-subdivisions", "subdivisions-enriched-dtl", "subdivisions-enriched")
DERIVED = ("subdivisions-enriched", "subdivisions-enriched-dtl")


def _records(name: str, key: str) -> list[dict]:
    return orjson.loads((DEMO / "data" / name).read_bytes())[key]


COUNTRIES = _records("iso_3166-1.json", "3166-1")
SUBDIVISIONS = _records("iso_3166-2.json", "3166-2")
COUNTS = {"iso-countries": len(COUNTRIES), "iso-subdivisions": len(SUBDIVISIONS),
          "subdivisions-enriched": len(SUBDIVISIONS), "subdivisions-enriched-dtl": len(SUBDIVISIONS)}


def sluice(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``sluice ARGS --data-dir DATA_DIR``; returns the finished process (text output)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [SLUICE, *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, cwd=data_dir.parent, timeout=90,
    )
    if check:
        assert proc.returncode == 0, f"sluice {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def rows(text: str) -> dict[str, list[str]]:
    """The body rows of a rich table printed by the CLI, keyed by their first cell."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = cells[1:]
    return out


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


def run_summary(text: str) -> dict[str, dict[str, object]]:
    """``sluice run``'s summary table as {pipe: {status, run, read, new, ...}}."""
    names = ("status", "run", "read", "new", "changed", "deleted", "unchanged")
    return {
        pipe: {n: (number(v) if n not in ("status", "run") else v) for n, v in zip(names, cells, strict=False)}
        for pipe, cells in rows(text).items()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory after one ``sluice run config/demo``, and that run's stdout."""
    data = tmp_path_factory.mktemp("demo") / "data"
    proc = sluice("run", str(DEMO), data_dir=data)
    return data, proc.stdout


def test_first_run_collects_every_record(demo: tuple[Path, str]) -> None:
    data, stdout = demo
    summary = run_summary(stdout)
    assert list(summary) == list(PIPES)  # dependency order: collects before the derived pipe
    for pipe in PIPES:
        s = summary[pipe]
        assert (s["status"], s["run"]) == ("completed", "full"), pipe
        assert s["read"] == s["new"] == COUNTS[pipe], pipe
        assert (s["changed"], s["deleted"], s["unchanged"]) == (0, 0, 0), pipe
    assert (data / "sluice.db").is_file()


def test_datasets_command_counts_match_the_files(demo: tuple[Path, str]) -> None:
    data, _ = demo
    proc = sluice("datasets", data_dir=data)
    table = rows(proc.stdout)
    assert set(table) == set(PIPES)
    for name, cells in table.items():
        committed, ids, deleted, populated = number(cells[0]), number(cells[1]), number(cells[2]), cells[3]
        assert ids == COUNTS[name] and committed == COUNTS[name] - 1, name
        assert (deleted, populated) == (0, "yes"), name
    assert str(data.resolve()) in proc.stderr  # the data directory is shown


def test_entities_limit_returns_the_first_records(demo: tuple[Path, str]) -> None:
    data, _ = demo
    lines = sluice("entities", "iso-countries", "--limit", "3", data_dir=data).stdout.splitlines()
    got = [orjson.loads(line) for line in lines]
    assert [e["_id"] for e in got] == [c["alpha_2"] for c in COUNTRIES[:3]]
    for entity, record in zip(got, COUNTRIES[:3], strict=True):
        assert {k: v for k, v in entity.items() if not k.startswith("_")} == record
        assert entity["_updated"] == COUNTRIES.index(record) and entity["_previous"] is None
        assert len(entity["_hash"]) == 32


def test_derived_dataset_is_the_transform_of_every_subdivision(demo: tuple[Path, str]) -> None:
    data, _ = demo
    sys.path.insert(0, str(DEMO))
    try:
        from iso_demo import enrich  # the demo's own transform module
    finally:
        sys.path.remove(str(DEMO))
    proc = sluice("entities", "subdivisions-enriched", "--limit", "100000", data_dir=data)
    got = {e["_id"]: e for e in map(orjson.loads, proc.stdout.splitlines())}
    assert len(got) == len(SUBDIVISIONS)
    for record in SUBDIVISIONS:
        expected = enrich({**record, "_id": record["code"]})
        assert {k: v for k, v in got[record["code"]].items() if not k.startswith("_") or k == "_id"} == expected
    # the real data's two spellings of a parent both become a full code
    assert got["AZ-BAB"]["parent_code"] == "AZ-NX" and got["AZ-BAB"]["level"] == 2
    assert got["GB-ABD"]["parent_code"] == "GB-SCT"
    assert got["AD-02"]["level"] == 1 and got["AD-02"]["parent_code"] is None


def test_the_dtl_pipe_gives_the_python_pipes_dataset(demo: tuple[Path, str]) -> None:
    data, _ = demo

    def dataset(name: str) -> dict[str, dict]:
        proc = sluice("entities", name, "--limit", "100000", data_dir=data)
        return {e["_id"]: {k: v for k, v in e.items() if not k.startswith("_") or k in ("_id", "_deleted")}
                for e in map(orjson.loads, proc.stdout.splitlines())}

    python, dtl = dataset("subdivisions-enriched"), dataset("subdivisions-enriched-dtl")
    assert len(dtl) == len(SUBDIVISIONS)
    for entity_id, entity in python.items():
        assert dtl[entity_id] == entity, entity_id
    assert dtl.keys() == python.keys()


def test_second_run_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sluice("run", str(DEMO), data_dir=data)
    before = sluice("datasets", data_dir=data).stdout
    summary = run_summary(sluice("run", str(DEMO), data_dir=data).stdout)
    for pipe in ("iso-countries", "iso-subdivisions"):
        s = summary[pipe]
        assert (s["read"], s["unchanged"]) == (COUNTS[pipe], COUNTS[pipe]), pipe
        assert (s["new"], s["changed"], s["deleted"]) == (0, 0, 0), pipe
    for pipe in DERIVED:
        derived = summary[pipe]
        assert derived["run"] == "incremental" and derived["read"] == 0, pipe
        assert (derived["new"], derived["changed"], derived["deleted"]) == (0, 0, 0), pipe
    assert sluice("datasets", data_dir=data).stdout == before  # offsets and counts unchanged
    history = sluice("entities", "iso-subdivisions", "--history", "--limit", "100000", data_dir=data)
    assert len(history.stdout.splitlines()) == len(SUBDIVISIONS)  # one version per id


def test_pipes_reset_and_rerun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sluice("run", str(DEMO), data_dir=data)
    table = rows(sluice("pipes", str(DEMO), data_dir=data).stdout)
    assert list(table) == list(PIPES)
    assert table["subdivisions-enriched"][0] == str(len(SUBDIVISIONS) - 1)  # since = last offset read
    assert [table[p][1] for p in PIPES] == ["completed"] * len(PIPES)
    assert table["iso-countries"][0] == ""  # a file source has no continuation

    proc = sluice("reset", "subdivisions-enriched", data_dir=data)
    assert "subdivisions-enriched" in proc.stdout
    assert rows(sluice("pipes", str(DEMO), data_dir=data).stdout)["subdivisions-enriched"][0] == ""

    again = run_summary(sluice("run", str(DEMO), "--pipe", "subdivisions-enriched", data_dir=data).stdout)
    s = again["subdivisions-enriched"]
    assert (s["run"], s["read"], s["unchanged"]) == ("full", len(SUBDIVISIONS), len(SUBDIVISIONS))
    assert (s["new"], s["changed"], s["deleted"]) == (0, 0, 0)


def test_check_validates_without_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = sluice("check", str(DEMO), data_dir=data)
    assert proc.stdout.strip() == f"ok: 4 pipes, 0 systems in {DEMO}"
    assert not (data / "sluice.db").exists()


def test_entities_of_unknown_dataset_fails(demo: tuple[Path, str]) -> None:
    data, _ = demo
    proc = sluice("entities", "no-such-dataset", data_dir=data, check=False)
    assert proc.returncode == 1
    assert "no-such-dataset" in proc.stderr


def test_reset_says_what_since_became(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sluice("run", str(DEMO), "--pipe", "iso-subdivisions", "--pipe", "subdivisions-enriched", data_dir=data)
    cleared = sluice("reset", "subdivisions-enriched", data_dir=data).stdout
    assert cleared.strip() == "pipe subdivisions-enriched: since cleared: the next run is full"
    moved = sluice("reset", "subdivisions-enriched", "--since", "100", data_dir=data).stdout
    assert moved.strip() == "pipe subdivisions-enriched: since set to 100: the next run reads what came after it"
    assert rows(sluice("pipes", str(DEMO), data_dir=data).stdout)["subdivisions-enriched"][0] == "100"


def test_reset_refusal_names_the_pipe_once(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "pipes.yaml").write_text(
        "- {_id: ledger-events, type: pipe, disable_set_last_seen: true,\n"
        "   source: {type: embedded, entities: [{_id: a}]}}\n")
    proc = sluice("reset", "ledger-events", "--config", str(config), data_dir=tmp_path / "data", check=False)
    assert proc.returncode == 1 and "disable_set_last_seen" in proc.stderr
    assert proc.stderr.count("ledger-events") == 1, proc.stderr


def test_pipes_shows_when_the_last_run_ended(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = int(time.time())
    sluice("run", str(DEMO), "--pipe", "iso-countries", data_dir=data)
    table = rows(sluice("pipes", str(DEMO), data_dir=data).stdout)
    ended = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \((.+ ago|now)\)", table["iso-countries"][2])
    assert ended, table["iso-countries"]
    at = datetime.strptime(ended[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    assert before - 1 <= at <= time.time() + 1
    assert table["iso-subdivisions"][1:3] == ["never run", ""]


# The README's "Commands to try", each line as a user types it after the set-up command (which
# made the first run), with what its comment promises.
def _all_unchanged(p: subprocess.CompletedProcess[str]) -> None:
    s = run_summary(p.stdout)
    assert [(s[x]["read"], s[x]["unchanged"]) for x in PIPES[:2]] == [(COUNTS[x], COUNTS[x]) for x in PIPES[:2]]
    assert [s[x]["read"] for x in DERIVED] == [0, 0]
    assert all((v["new"], v["changed"], v["deleted"]) == (0, 0, 0) for v in s.values())


def _datasets(p: subprocess.CompletedProcess[str]) -> None:
    assert {k: number(v[1]) for k, v in rows(p.stdout).items()} == COUNTS


def _json_lines(n: int) -> Callable[[subprocess.CompletedProcess[str]], None]:
    def check(p: subprocess.CompletedProcess[str]) -> None:
        assert len([orjson.loads(line) for line in p.stdout.splitlines()]) == n, p.stdout

    return check


def _pipes(p: subprocess.CompletedProcess[str]) -> None:
    table = rows(p.stdout)
    assert [table[x][1] for x in PIPES] == ["completed"] * 4 and table["subdivisions-enriched"][0] == "5126"


def _reset(p: subprocess.CompletedProcess[str]) -> None:
    assert "since cleared: the next run is full" in p.stdout


def _rerun(p: subprocess.CompletedProcess[str]) -> None:
    s = run_summary(p.stdout)["subdivisions-enriched"]
    assert (s["run"], s["read"], s["unchanged"], s["new"]) == ("full", 5127, 5127, 0)


def _check(p: subprocess.CompletedProcess[str]) -> None:
    assert p.stdout.startswith("ok: 4 pipes")


COMMANDS_TO_TRY: dict[str, Callable[[subprocess.CompletedProcess[str]], None] | None] = {
    ". .venv/bin/activate                             # puts sluice on PATH": None,
    "sluice run config/demo                           # the set-up made the first run (249 + 5127 + 5127 + 5127 new);"
    " this one: everything unchanged, nothing written": _all_unchanged,
    "sluice datasets                                  # offsets, ids, deleted, populated": _datasets,
    "sluice entities iso-countries --limit 3          # JSON lines": _json_lines(3),
    "sluice entities iso-subdivisions --history --limit 3": _json_lines(3),
    "sluice pipes config/demo                         # since and last run per pipe (when, and how long ago)": _pipes,
    "sluice reset subdivisions-enriched               # since cleared: the next run is full...": _reset,
    "sluice run config/demo --pipe subdivisions-enriched   # ...reading 5127, all unchanged": _rerun,
    "sluice check config/demo                         # validate only": _check,
}


def test_readme_commands_to_try_show_what_they_say(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Commands to try", 1)[1].split("```", 2)[1]
    assert block.strip("\n").splitlines() == list(COMMANDS_TO_TRY)
    home = tmp_path / "checkout"  # a fresh directory holding what the commands name: config/demo
    shutil.copytree(DEMO, home / "config" / "demo")
    env = {**os.environ, "NO_COLOR": "1", "PATH": f"{Path(SLUICE).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sluice", "run", "config/demo"], cwd=home, env=env, check=True, capture_output=True)  # set-up
    for line, expect in COMMANDS_TO_TRY.items():
        command = line.split("#", 1)[0].split()
        if expect is None:
            continue  # the activation: PATH above
        proc = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        expect(proc)
