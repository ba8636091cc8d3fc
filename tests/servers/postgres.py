"""A temporary PostgreSQL server for tests: ``initdb`` into a fresh directory and ``pg_ctl
start`` on a free 127.0.0.1 port (about 0.5 s), as ``../shared/reference/test-infra.md`` shows.

The binaries come from the Debian ``postgresql`` package (``scripts/setup.d/40-postgresql.sh``).
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``),
otherwise as the current user. :meth:`PostgresServer.stop` stops exactly that server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory, or None when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running temporary server (user ``postgres``, trust authentication, fsync off)."""

    root: Path
    port: int
    bin: Path

    @classmethod
    def start(cls) -> PostgresServer:
        """initdb and start a server in a new temporary directory.

        Raises:
            RuntimeError: no PostgreSQL is installed, or initdb/pg_ctl failed (their output included).
        """
        found = bin_dir()
        if found is None:
            raise RuntimeError("no PostgreSQL installed: run scripts/setup.d/40-postgresql.sh")
        root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        server = cls(root, _free_port(), found)
        data = root / "data"
        server._run([str(found / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                     "-E", "UTF8", "--locale=C"])
        server._start()
        return server

    def _start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-w", "-l", str(self.root / "server.log"),
                   "-o", options, "start"])

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server at once (``-m immediate``: every session cut, as in a crash), stay down
        ``down_s`` seconds, start it again on the same port with the same data."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"])
        time.sleep(down_s)
        self._start()

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(_as_server_user(args), capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` (a copy of ``template``) and return its URL."""
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
