"""Local staging (``connectors.storage.staging``) with real processes: what a SIGKILLed process
staged is removed by the next process that stages in the same directory; a live process's
directory is kept; a process that exits normally removes its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.storage import staging

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from connectors.storage.staging import staging_dir
d = staging_dir()
(d / "partial.download").write_bytes(b"x" * 1000)
print(d, flush=True)
if sys.argv[1] == "wait":
    time.sleep(60)
"""


def child(base: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    """A process that stages a file under ``base`` (then waits, or exits): it and its directory."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            env={**os.environ, "SLUICE_TMPDIR": str(base)})
    assert proc.stdout is not None
    with proc.stdout:
        return proc, Path(proc.stdout.readline().strip())


def test_a_killed_process_s_staging_is_removed_a_live_one_s_kept(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    killed, killed_dir = child(tmp_path, "wait")
    alive, alive_dir = child(tmp_path, "wait")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert (killed_dir / "partial.download").exists()  # a SIGKILL leaves it behind
        unrelated = tmp_path / "sluice-other"  # not a staging directory: never touched
        unrelated.mkdir()
        monkeypatch.setenv("SLUICE_TMPDIR", str(tmp_path))
        own = staging.staging_dir()
        assert own.parent == tmp_path and own.name.startswith(staging.PREFIX)
        assert not killed_dir.exists()
        assert (alive_dir / "partial.download").exists()
        assert unrelated.is_dir()
        assert staging.staging_dir() == own  # later calls: the same directory, no sweep
    finally:
        alive.kill()
        alive.wait(10)
    # the live one is now gone too: a new sweep removes it
    assert staging.sweep(tmp_path, keep=own) == [alive_dir.name]
    assert {p.name for p in tmp_path.iterdir()} == {own.name, "sluice-other"}


def test_a_process_that_exits_removes_its_staging(tmp_path: Path) -> None:
    proc, path = child(tmp_path, "exit")
    assert proc.wait(30) == 0
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_a_vanished_staging_directory_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TMPDIR", str(tmp_path))
    first = staging.staging_dir()
    first.rename(tmp_path / "moved-away")  # a /tmp cleaner
    second = staging.staging_dir()
    assert second != first and second.is_dir() and (second / "lock").exists()
