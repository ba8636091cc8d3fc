"""Logs: stderr of the ``sluice`` command, as a user runs it (a subprocess of the console script).

JSON lines only with ``--log-format json``; ``run.started``/``run.finished`` at the default level;
third-party loggers at warning unless ``--library-log-level`` asks for more; the pipe id and run
id on every line a run logs, connectors' lines included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.core.helpers import file_pipe, write_ndjson
from tests.rest.conftest import collect_pipe, system
from tests.servers.faulty_api import FaultyApi, serve

SLUICE = str(Path(sys.executable).parent / "sluice")
ENV = {**os.environ, "NO_COLOR": "1"}


def sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, timeout=60, env=ENV)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line parsed as JSON (fails on the first line that is not)."""
    return [orjson.loads(line) for line in stderr.splitlines()]


def two_pipes(tmp_path: Path, write_config) -> Path:
    write_ndjson(tmp_path / "config" / "data" / "rows.ndjson", [{"id": 1}, {"id": 2}])
    return write_config([file_pipe("rows", "data/rows.ndjson"), file_pipe("bad", "data/missing.ndjson")])


def test_json_logs_bind_pipe_and_run_id_at_the_default_level(tmp_path, write_config):
    cfg = two_pipes(tmp_path, write_config)
    done = sluice("run", str(cfg), "--data-dir", str(tmp_path / "d"), "--log-format", "json")
    assert done.returncode == 1  # pipe "bad" failed
    events = json_lines(done.stderr)  # every line is JSON, the data directory's included
    where = next(e for e in events if e["event"] == "data.directory")
    assert where["data_dir"] == str((tmp_path / "d").resolve()) and where["store"].endswith("sluice.db")
    runs = [e for e in events if e["event"].startswith("run.")]
    assert {e["event"] for e in runs} == {"run.started", "run.finished", "run.failed"}
    assert all(e["pipe"] in ("rows", "bad") and len(e["run_id"]) == 12 for e in runs)
    failed = next(e for e in runs if e["event"] == "run.failed")
    assert failed["pipe"] == "bad" and "missing.ndjson" in failed["error"] and failed["level"] == "error"
    finished = next(e for e in runs if e["event"] == "run.finished")
    assert finished["new"] == 2 and finished["timestamp"].endswith("Z")
    told = next(e for e in events if e["event"] == "pipe.failed")
    assert told["pipe"] == "bad" and "missing.ndjson" in told["error"]
    assert "rows" in done.stdout


def test_console_logs_show_runs_and_failures(tmp_path, write_config):
    cfg = two_pipes(tmp_path, write_config)
    done = sluice("run", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    assert "run.started" in done.stderr and "run.finished" in done.stderr
    assert "data directory:" in done.stderr and "pipe bad failed" in done.stderr


def test_json_errors_of_a_refused_config_or_usage_are_json(tmp_path, write_config):
    cfg = write_config([{"_id": "p", "type": "pipe", "source": {"type": "nope"}}])
    done = sluice("run", str(cfg), "--data-dir", str(tmp_path / "d"), "--log-format", "json")
    assert done.returncode == 2
    invalid = next(e for e in json_lines(done.stderr) if e["event"] == "config.invalid")
    assert invalid["level"] == "error" and any("source" in p for p in invalid["problems"])
    (tmp_path / "secrets.yaml").write_text("[1, 2]\n")  # not an object: a usage error
    done = sluice("run", str(cfg), "--data-dir", str(tmp_path / "d"), "--log-format", "json",
                  "--secrets-file", str(tmp_path / "secrets.yaml"))
    assert done.returncode == 2
    usage = next(e for e in json_lines(done.stderr) if e["event"] == "usage.invalid")
    assert "secrets.yaml" in usage["error"]


def test_debug_keeps_library_loggers_at_warning_unless_asked(tmp_path, write_config):
    cfg = two_pipes(tmp_path, write_config)
    common = ["run", str(cfg), "--pipe", "rows", "--log-format", "json", "--log-level", "debug"]
    quiet = json_lines(sluice(*common, "--data-dir", str(tmp_path / "d1")).stderr)
    assert all(e["logger"].startswith("sluice.") for e in quiet), {e["logger"] for e in quiet}
    assert any(e["level"] == "debug" for e in quiet)  # Sluice's own debug lines are there
    loud = json_lines(sluice(*common, "--data-dir", str(tmp_path / "d2"), "--library-log-level", "debug").stderr)
    assert any(e["logger"] == "aiosqlite" for e in loud)  # the SQL lines exist when asked for


async def test_every_line_of_a_run_carries_pipe_and_run_id(tmp_path, write_config):
    api = FaultyApi()
    for n in range(30):
        api.upsert(f"i{n:02}", name=f"item {n}", value=n)
    api.auth, api.client, api.token_max_uses = "oauth", ("sluice", "s3cret"), 2
    api.faults = [{"status": 503, "query": "page=2"}, {"reset": True, "query": "page=3"}]
    async with serve(api) as url:
        auth = {"type": "oauth2", "token_url": "/oauth/token", "client_id": "sluice",
                "client_secret": "$SECRET(CLIENT_SECRET)"}
        cfg = write_config([system(url, auth=auth), collect_pipe()])
        proc = await asyncio.create_subprocess_exec(
            SLUICE, "run", str(cfg), "--data-dir", str(tmp_path / "d"), "--log-format", "json",
            "--log-level", "debug", env={**ENV, "CLIENT_SECRET": "s3cret"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    events = json_lines(stderr.decode())
    names = [e["event"] for e in events]
    start, end = names.index("run.started"), names.index("run.finished")
    inside = events[start : end + 1]
    assert {"rest.retry", "rest.reauthorize"} <= {e["event"] for e in inside}  # connector lines
    run_id = events[start]["run_id"]
    assert all((e.get("pipe"), e.get("run_id")) == ("items", run_id) for e in inside), inside
    assert "s3cret" not in stderr.decode()


def test_serve_logs_only_json_lines(tmp_path, write_config):
    cfg = two_pipes(tmp_path, write_config)
    ready = tmp_path / "ready.json"
    daemon = subprocess.Popen(
        [SLUICE, "serve", str(cfg), "--port", "0", "--data-dir", str(tmp_path / "d"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for _ in range(600):
            if ready.exists() or daemon.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the daemon did not become ready"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    events = json_lines(stderr)
    starting = next(e for e in events if e["event"] == "serve.starting")
    assert starting["pipes"] == 2 and starting["data_dir"] == str((tmp_path / "d").resolve())
    assert "daemon.stopped" in {e["event"] for e in events}
