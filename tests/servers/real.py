"""Start real REST servers no one on the team wrote, on 127.0.0.1 ephemeral ports.

* json-server 0.17.4 (npm, installed into ``tests/servers/node_modules`` by
  ``scripts/setup.d/20-rest.sh``): ``_page``/``_limit`` with ``Link`` and ``X-Total-Count``.
* Datasette (PyPI, the ``test`` extra): keyset pagination, ``next_url`` in the body.
* Kinto (PyPI, the ``test`` extra, memory backend): ``Next-Page`` header, ``_since``, basic auth
  through the accounts plugin.

Each starter returns a :class:`Server`; :meth:`Server.stop` ends exactly that process (by its id).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
JSON_SERVER = HERE / "node_modules" / ".bin" / "json-server"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Server:
    """A started server process and its base URL."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], url: str, probe: str, workdir: Path, timeout: float = 40.0) -> Server:
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    server = Server(process, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + probe, timeout=2) as resp:
                if resp.status < 500:
                    return server
        except urllib.error.HTTPError as exc:  # an answer, even a 4xx, means it is up
            if exc.code < 500:
                return server
            time.sleep(0.1)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{cmd[0]} did not answer on {url}{probe} within {timeout} s: {log.read_text()[-2000:]}")


def json_server(db: Path) -> Server:
    """json-server 0.17.4 serving ``db`` (a JSON file; writes persist into it)."""
    if not JSON_SERVER.exists():
        raise RuntimeError(f"{JSON_SERVER} is missing; run scripts/setup.d/20-rest.sh")
    port = free_port()
    cmd = [str(JSON_SERVER), "--host", "127.0.0.1", "--port", str(port), "--quiet", str(db)]
    return _start(cmd, f"http://127.0.0.1:{port}", "/db", db.parent)


def datasette(db: Path, page_size: int = 20) -> Server:
    """Datasette serving the SQLite file ``db`` (mutable: changes to the file are visible)."""
    port = free_port()
    cmd = [str(VENV_BIN / "datasette"), "serve", str(db), "-h", "127.0.0.1", "-p", str(port),
           "--setting", "default_page_size", str(page_size)]
    return _start(cmd, f"http://127.0.0.1:{port}", "/-/versions.json", db.parent)


def kinto(workdir: Path) -> Server:
    """Kinto with the memory backend and the accounts plugin; anyone may create an account and
    every authenticated account may create buckets."""
    kinto_bin = _kinto_bin()
    ini = workdir / "kinto.ini"
    subprocess.run([str(kinto_bin), "init", "--ini", str(ini), "--backend", "memory",
                    "--cache-backend", "memory"], cwd=workdir, check=True, capture_output=True,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    text = ini.read_text().replace("kinto.bucket_create_principals = account:admin",
                                   "kinto.bucket_create_principals = system.Authenticated")
    ini.write_text(text)
    port = free_port()
    cmd = [str(kinto_bin), "start", "--ini", str(ini), "--port", str(port)]
    return _start(cmd, f"http://127.0.0.1:{port}", "/v1/", workdir)


def _kinto_bin() -> Path:
    for candidate in (VENV_BIN / "kinto", HERE / ".kinto-venv" / "bin" / "kinto"):
        if candidate.exists():
            return candidate
    found = shutil.which("kinto")
    if found:
        return Path(found)
    raise RuntimeError("kinto is not installed; pip install -e '.[test]' (or scripts/setup.d/20-rest.sh)")
