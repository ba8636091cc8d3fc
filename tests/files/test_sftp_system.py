"""``system:sftp`` (connectors/storage/sftp.py) on its own: host key pinning (``known_hosts``
required, a wrong host key refused, ``insecure_skip_host_key_check`` logged), reconnecting after the
server dropped the connection, retrying a listing the connection dropped under, and the request
metrics of connectors/storage/base.py.

The server is the asyncssh one of tests/servers/storage.py (the ``sftp`` fixture of conftest.py),
except for the two connection-drop tests: that server keeps no handle on its connections, so they
use :func:`dropping_server` below, a small asyncssh server that does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import structlog
import yaml

from runtime import ConfigError, Runtime
from runtime.config import load_config
from runtime.errors import FatalError
from runtime.metrics import REGISTRY
from runtime.plugins import default_registry
from tests.files.common import csv_rows, live, two_step
from tests.files.conftest import _secret
from tests.servers.storage import SftpServer

FILES = {"a.csv", "sub/b.csv"}


def system(port: int, client_key: str, **keys: Any) -> dict[str, Any]:
    return {"type": "system:sftp", "host": "127.0.0.1", "port": port, "username": "sluice",
            "private_key": _secret("SFTP_KEY", client_key), "retry_backoff_s": 0.05, **keys}


def config(tmp_path: Path, sys_config: dict[str, Any]) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    pipes = two_step(sys_config, listing={"recursive": True})
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg


def put_files(root: Path) -> None:
    for path in FILES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(csv_rows([1]))


def metric(name: str, **labels: str) -> float:
    """Sum of the samples ``name`` of :data:`REGISTRY` whose labels include ``labels``."""
    return sum(s.value for m in REGISTRY.collect() for s in m.samples
               if s.name == name and labels.items() <= s.labels.items())


@dataclass
class Dropping:
    port: int
    client_key: str
    known_hosts: str
    connections: list[asyncssh.SSHServerConnection] = field(default_factory=list)
    drop_listings: int = 0
    """Directory listings still to be answered by aborting the connection."""


@asynccontextmanager
async def dropping_server(root: Path) -> AsyncIterator[Dropping]:
    """An asyncssh SFTP server chrooted to ``root`` that records every connection (so a test can
    abort them) and aborts the connection instead of listing while ``drop_listings`` > 0."""
    host_key, client_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    state: Dropping

    class Sftp(asyncssh.SFTPServer):
        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=str(root).encode())
            state.connections.append(chan.get_connection())

        async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
            if state.drop_listings:
                state.drop_listings -= 1
                self.connection.abort()
                raise asyncssh.SFTPFailure("connection aborted (injected)")
            async for name in super().scandir(path):
                yield name

    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    acceptor = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
                                     sftp_factory=Sftp, allow_scp=False)
    port = acceptor.sockets[0].getsockname()[1]
    state = Dropping(port, client_key.export_private_key().decode(),
                     f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    try:
        yield state
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        for conn in state.connections:
            conn.close()
            await conn.wait_closed()


@pytest.mark.parametrize(("keys", "says"), [
    ({}, "known_hosts is required"),
    ({"known_hosts": "[127.0.0.1]:22 ssh-ed25519 AAAA", "insecure_skip_host_key_check": True}, "not both"),
])
def test_host_key_check_cannot_be_left_out(tmp_path: Path, keys: dict[str, Any], says: str) -> None:
    """Without ``known_hosts`` the config is refused unless the check is skipped explicitly, and
    skipping it while pinning a key is refused too."""
    cfg = config(tmp_path, {"type": "system:sftp", "host": "127.0.0.1", "username": "sluice",
                            "password": _secret("SFTP_PASSWORD", "pw"), **keys})
    with pytest.raises(ConfigError) as info:
        load_config(cfg, default_registry())
    assert "drop:" in str(info.value) and "known_hosts" in str(info.value) and says in str(info.value)


async def test_unpinned_host_key_refused(tmp_path: Path, sftp: SftpServer) -> None:
    """A server whose host key is not the one in ``known_hosts`` is not logged into: the run fails
    fatally (no retries) and lists nothing."""
    put_files(sftp.root)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    cfg = config(tmp_path, system(sftp.port, sftp.client_key, known_hosts=f"[127.0.0.1]:{sftp.port} {other}\n"))
    retries = metric("sluice_system_retries_total", system="drop")
    errors = metric("sluice_system_requests_total", system="drop", status="error")
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        result = await rt.run_pipe("listing")
        assert result.status == "failed"
        assert isinstance(result.error, FatalError) and "is not in known_hosts" in str(result.error), result.error
        assert await live(rt, "listing") == {}
    assert metric("sluice_system_retries_total", system="drop") == retries
    assert metric("sluice_system_requests_total", system="drop", status="error") == errors + 1  # counted, not retried


async def test_skipped_host_key_check_logged(tmp_path: Path, sftp: SftpServer) -> None:
    """``insecure_skip_host_key_check: true`` connects to any host key and logs a warning.
    ``structlog.testing.capture_logs`` sees it: runtime/logs.py configures structlog with
    ``cache_logger_on_first_use=False``, so the capturing processors apply to loggers made before."""
    put_files(sftp.root)
    cfg = config(tmp_path, system(sftp.port, sftp.client_key, insecure_skip_host_key_check=True))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        with structlog.testing.capture_logs() as logs:
            result = await rt.run_pipe("listing")
        assert result.status == "completed", result.error
        assert set(await live(rt, "listing")) == FILES
    warned = [e for e in logs if e["event"] == "sftp.host_key_not_checked"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning" and warned[0]["system"] == "drop", logs


async def test_reconnects_after_server_dropped_connection(tmp_path: Path) -> None:
    """The server aborts the connection between two runs: the second run opens a new connection
    and lists the same files."""
    (tmp_path / "sftp").mkdir()
    put_files(tmp_path / "sftp")
    async with dropping_server(tmp_path / "sftp") as server:
        cfg = config(tmp_path, system(server.port, server.client_key, known_hosts=server.known_hosts))
        async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
            first = await rt.run_pipe("listing")
            assert first.status == "completed", first.error
            assert set(await live(rt, "listing")) == FILES and len(server.connections) == 1
            for conn in server.connections:
                conn.abort()
            second = await rt.run_pipe("listing")
            assert second.status == "completed", second.error
            assert set(await live(rt, "listing")) == FILES
            assert len(server.connections) == 2 and not server.connections[1].is_closed()


async def test_listing_retried_after_connection_dropped(tmp_path: Path) -> None:
    """The connection drops under the first listing attempt: the attempt is retried (counted in
    ``sluice_system_retries_total``) on a new connection and the run completes."""
    (tmp_path / "sftp").mkdir()
    put_files(tmp_path / "sftp")
    async with dropping_server(tmp_path / "sftp") as server:
        server.drop_listings = 1
        cfg = config(tmp_path, system(server.port, server.client_key, known_hosts=server.known_hosts))
        retries = metric("sluice_system_retries_total", system="drop", reason="list")
        async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
            with structlog.testing.capture_logs() as logs:
                result = await rt.run_pipe("listing")
            assert result.status == "completed", result.error
            assert set(await live(rt, "listing")) == FILES
        assert server.drop_listings == 0 and len(server.connections) == 2
        assert metric("sluice_system_retries_total", system="drop", reason="list") == retries + 1
        assert [e["op"] for e in logs if e["event"] == "files.retry"] == ["list"]


async def test_requests_counted(tmp_path: Path, sftp: SftpServer) -> None:
    """A listing run adds successful requests of the system to ``sluice_system_requests_total``."""
    put_files(sftp.root)
    cfg = config(tmp_path, system(sftp.port, sftp.client_key, known_hosts=sftp.known_hosts))
    before = metric("sluice_system_requests_total", system="drop", status="ok")
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        result = await rt.run_pipe("listing")
        assert result.status == "completed", result.error
    assert metric("sluice_system_requests_total", system="drop", status="ok") >= before + 1


async def test_operations_at_once_share_a_pool_of_connections(tmp_path: Path) -> None:
    """With ``connections: 3`` six downloads at once use three connections; a download after
    them reuses one; the downloads on a connection the server aborted are retried, and that
    connection alone is opened again (when three operations overlap again), the other two stay
    open."""
    root = tmp_path / "sftp"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}.csv").write_text(csv_rows(range(i + 1)))
    async with dropping_server(root) as server:
        cfg = config(tmp_path, system(server.port, server.client_key, known_hosts=server.known_hosts,
                                      connections=3))
        async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
            drop = rt.systems["drop"]

            async def download_all() -> list[int]:
                return list(await asyncio.gather(*(drop.download(f"f{i}.csv", tmp_path / f"got{i}") for i in range(6))))

            sizes = await download_all()
            assert sizes == [len(csv_rows(range(i + 1))) for i in range(6)] and len(server.connections) == 3
            await drop.download("f0.csv", tmp_path / "again")
            assert len(server.connections) == 3
            server.connections[0].abort()
            assert await download_all() == sizes  # those on the aborted connection retried
            assert await download_all() == sizes  # three at once again: its slot was opened again
            assert len(server.connections) == 4
            assert [c.is_closed() for c in server.connections] == [True, False, False, False]
        assert all(c.is_closed() for c in server.connections)  # closing the runtime closed the pool
