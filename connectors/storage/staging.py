"""Local staging of the files source's downloads and the files sink's rolled files, and the
removal of what killed processes left there.

A process stages its files in a directory of its own, ``sluice-staging-<random>`` under
:func:`temp_dir`, and holds an exclusive ``flock`` on the ``lock`` file inside it for as long as
it lives. The kernel drops that lock when the process ends, however it ends (SIGKILL, the OOM
killer), so a staging directory whose lock can be taken belongs to a process that is gone: the
first staging of every process removes those (the partial download or staged file of a killed
run, up to the size of the largest file). A live process's directory is never touched, whether it
is another daemon, a cluster member or a one-shot ``sluice run`` on the same machine; a process
removes its own directory when it exits normally.

The directory is created under a hidden name and renamed once its lock is held, so a sweeping
process never sees a directory that is not locked yet.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("sluice.files")

PREFIX = "sluice-staging-"
_NEW = ".sluice-staging-new-"
STALE_NEW_S = 60.0
"""A hidden directory still unnamed after this many seconds was left by a process killed while it
created it (the rename follows the lock in microseconds)."""

_held: dict[str, Path] = {}  # temp dir -> this process's staging directory in it
_fds: list[int] = []  # the lock files' descriptors, open (and locked) until the process ends
_mutex = threading.Lock()


def temp_dir() -> str:
    """The directory staging directories are made in: ``SLUICE_TMPDIR``, else ``TMPDIR``, else
    ``/tmp``."""
    return os.environ.get("SLUICE_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"


def staging_dir() -> Path:
    """This process's staging directory under :func:`temp_dir`, created (and the directories of
    dead processes removed) on the first call for that directory, or when it has vanished (a
    ``/tmp`` cleaner). That call blocks on file I/O (make it in a worker thread from async code,
    e.g. when a component opens); later ones cost one ``stat``.

    Raises:
        OSError: the directory cannot be created.
    """
    base = temp_dir()
    with _mutex:
        own = _held.get(base)
        if own is None or not own.is_dir():
            own = _held[base] = _create(Path(base))
            removed = sweep(Path(base), keep=own)
            if removed:
                log.info("files.staging_swept", directory=base, removed=removed)
        return own


def _create(base: Path) -> Path:
    new = Path(tempfile.mkdtemp(prefix=_NEW, dir=base))
    fd = os.open(new / "lock", os.O_CREAT | os.O_RDWR, 0o600)  # not inherited by child processes
    fcntl.flock(fd, fcntl.LOCK_EX)
    _fds.append(fd)
    own = base / f"{PREFIX}{new.name.removeprefix(_NEW)}"
    new.rename(own)
    atexit.register(shutil.rmtree, own, ignore_errors=True)
    return own


def sweep(base: Path, *, keep: Path | None = None) -> list[str]:
    """Remove the staging directories under ``base`` whose process is gone (their lock can be
    taken), except ``keep``; returns the names removed."""
    removed: list[str] = []
    for entry in base.iterdir():
        name = entry.name
        hidden = name.startswith(_NEW)
        if entry == keep or not (hidden or name.startswith(PREFIX)):
            continue
        try:
            if hidden and time.time() - entry.stat().st_mtime < STALE_NEW_S:
                continue  # being created this instant: its lock (or the flock on it) comes next
            if not _unlocked(entry / "lock", missing_dead=hidden):
                continue
        except OSError:  # gone meanwhile, not a directory, or another user's
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(name)
    return removed


def _unlocked(lock: Path, *, missing_dead: bool) -> bool:
    """True when no live process holds ``lock``; the check's own lock is released at once. A
    missing lock counts as dead only for ``missing_dead`` (a hidden directory whose creator died
    before making it): a named directory lost its lock to a ``/tmp`` cleaner while its process may
    live, so it is left alone.

    Raises:
        OSError: ``lock`` cannot be opened (another user's, or not in a directory).
    """
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return missing_dead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True
