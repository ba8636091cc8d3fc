"""A real ``sluice serve`` process on 127.0.0.1 (ephemeral port) for each test that asks for one.

``start_daemon(objects, **settings)`` writes the config objects to a fresh config directory,
starts ``sluice serve`` with admin token ``ADMIN`` and read token ``READ``, waits for its ready
file and returns a :class:`Served` handle. Every process is stopped (SIGTERM, then SIGKILL) by its
pid at the end of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

SLUICE = str(Path(sys.executable).parent / "sluice")
ADMIN, READ = "admin-token-1", "read-token-1"


class Served:
    """A running daemon: its URL, directories, process and helpers."""

    def __init__(self, config_dir: Path, data_dir: Path, work: Path, extra_env: dict[str, str],
                 args: list[str]) -> None:
        self.config_dir, self.data_dir, self.work = config_dir, data_dir, work
        self.extra_env, self.args = extra_env, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> Served:
        """Start (or restart) the process and wait until it listens."""
        self.starts += 1
        ready = self.work / f"ready-{self.starts}.json"
        self.log_path = self.work / f"daemon-{self.starts}.log"
        env = {**os.environ, "SLUICE_ADMIN_TOKEN": ADMIN, "SLUICE_READ_TOKEN": READ, **self.extra_env}
        cmd = [SLUICE, "serve", str(self.config_dir), "--port", "0", "--data-dir", str(self.data_dir),
               "--ready-file", str(ready), "--log-level", "info", *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice serve exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sluice serve did not become ready:\n{self.log()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def write_config(self, objects: list[dict[str, Any]], name: str = "pipes") -> None:
        (self.config_dir / f"{name}.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Factory: ``start_daemon(objects, env={...}, args=[...])`` -> a started :class:`Served`."""
    started: list[Served] = []

    def start(objects: list[dict[str, Any]], *, env: dict[str, str] | None = None,
              args: list[str] | None = None, start: bool = True) -> Served:
        n = len(started)
        root = tmp_path / f"d{n}"
        (root / "config").mkdir(parents=True)
        served = Served(root / "config", root / "data", root, env or {}, args or [])
        served.write_config(objects)
        started.append(served)
        return served.start() if start else served

    yield start
    for served in started:
        served.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """A small JSON client of one daemon (aiohttp)."""

    def __init__(self, served: Served, session: aiohttp.ClientSession) -> None:
        self.served, self.session = served, session

    async def call(self, method: str, path: str, *, token: str | None = ADMIN, expect: int | None = 200,
                   **kwargs: Any) -> Any:
        headers = auth(token) if token else {}
        async with self.session.request(method, self.served.url + path, headers=headers, **kwargs) as r:
            body = await r.read()
            data = json.loads(body) if r.content_type == "application/json" else body.decode()
            if expect is not None:
                assert r.status == expect, f"{method} {path}: {r.status} {data}"
            return data

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.call("GET", path, token=kw.pop("token", READ), **kw)

    async def post(self, path: str, **kw: Any) -> Any:
        return await self.call("POST", path, **kw)

    async def pipe(self, pipe: str) -> dict[str, Any]:
        return await self.get(f"/api/pipes/{pipe}")

    async def until(self, predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll ``await predicate()`` until truthy (a bound, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- daemon log ---\n{self.served.log()[-4000:]}")
            await anyio.sleep(0.1)


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


def counter_pipe(pid: str, count: int, **pump: Any) -> dict[str, Any]:
    """A pipe reading the example plugin's counter source into a dataset named ``pid``."""
    extra = pump.pop("source", {})
    return {"_id": pid, "type": "pipe", "source": {"type": "example_counter", "count": count, **extra},
            "pump": pump}
