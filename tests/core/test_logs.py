"""Logs: JSON lines on stderr with the pipe id and run id bound to every line of a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.core.helpers import file_pipe, write_ndjson

SLUICE = str(Path(sys.executable).parent / "sluice")


def test_json_logs_bind_pipe_and_run_id(tmp_path, write_config):
    write_ndjson(tmp_path / "config" / "data" / "rows.ndjson", [{"id": 1}, {"id": 2}])
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"), file_pipe("bad", "data/missing.ndjson")])
    done = subprocess.run(
        [SLUICE, "run", str(cfg), "--data-dir", str(tmp_path / "d"), "--log-format", "json", "--log-level", "info"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1  # pipe "bad" failed
    events = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    runs = [e for e in events if e["event"].startswith("run.")]
    assert {e["event"] for e in runs} == {"run.started", "run.finished", "run.failed"}
    assert all(e["pipe"] in ("rows", "bad") and len(e["run_id"]) == 12 for e in runs)
    failed = next(e for e in runs if e["event"] == "run.failed")
    assert failed["pipe"] == "bad" and "missing.ndjson" in failed["error"] and failed["level"] == "error"
    finished = next(e for e in runs if e["event"] == "run.finished")
    assert finished["new"] == 2 and finished["timestamp"].endswith("Z")
    assert "pipe bad failed" in done.stderr and "rows" in done.stdout
