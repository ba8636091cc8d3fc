"""File servers for the file tests, on 127.0.0.1 ephemeral ports (test-infra.md):

* :func:`sftp_server`: an asyncssh SFTP server in this process, chrooted to a directory, public-key
  login, counting the files opened for reading (``SftpCounters.reads``: a second run that
  downloads nothing shows 0).
* :func:`s3_server`: moto's S3 backend behind werkzeug in a thread, every request counted by
  method and path (``S3Server.requests``).
* :func:`azurite`: Azurite (npm, installed into ``tests/servers/azurite`` by
  ``scripts/setup.d/40-files.sh``) as a subprocess, stopped by its process id.
"""

from __future__ import annotations

import asyncio
import posixpath
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from tests.servers.real import Server, _start, free_port

HERE = Path(__file__).resolve().parent
AZURITE = HERE / "azurite" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account key (devstoreaccount1), public by design."""


@dataclass
class SftpCounters:
    """What the SFTP server was asked (files opened for reading or writing, renames, removes, by
    path), and the seconds it waits before answering a read, a write or a rename (to kill a client
    then)."""

    reads: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    renames: Counter[str] = field(default_factory=Counter)
    rename_requests: Counter[str] = field(default_factory=Counter)
    """Renames asked for, counted before ``rename_delay_s`` (``renames``: those done)."""
    removes: Counter[str] = field(default_factory=Counter)
    read_delay_s: float = 0.0
    write_delay_s: float = 0.0
    """Seconds every write after a file's first block waits (the file is then partly written)."""
    writes_held: int = 0
    """Writes that started waiting ``write_delay_s``."""
    rename_delay_s: float = 0.0
    on_rename: Callable[[str], None] | None = None
    """Called with the path at each rename request, before it is done."""
    fail_renames: bool = False
    """Every rename fails with ``SSH_FX_FAILURE`` while set."""
    fail_listing: set[str] = field(default_factory=set)
    """Directories (relative to the root) whose listing fails with ``SSH_FX_FAILURE``."""


@dataclass
class SftpServer:
    """A running SFTP server: where it listens, its keys and counters."""

    port: int
    root: Path
    client_key: str
    known_hosts: str
    counters: SftpCounters
    acceptor: Any

    def close(self) -> None:
        self.acceptor.close()


@asynccontextmanager
async def sftp_server(root: Path, username: str = "sluice", port: int = 0) -> AsyncIterator[SftpServer]:
    """An asyncssh SFTP server chrooted to ``root`` accepting ``username`` with the generated
    client key (``client_key``, OpenSSH text); ``known_hosts`` pins its generated host key.
    ``port`` 0: an ephemeral one."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    counters = SftpCounters()
    connections: set[asyncssh.SSHServerConnection] = set()
    open_files: set[Any] = set()  # closed at shutdown if a client vanished (SIGKILL) holding them

    class Counting(asyncssh.SFTPServer):
        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=str(root).encode())

        def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
            (counters.writes if pflags & asyncssh.FXF_WRITE else counters.reads)[_client_path(path)] += 1
            file_obj = super().open(path, pflags, attrs)
            open_files.add(file_obj)
            return file_obj

        def close(self, file_obj: Any) -> None:
            open_files.discard(file_obj)
            super().close(file_obj)

        async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
            if _client_path(path) in {d.strip("/") for d in counters.fail_listing}:
                raise asyncssh.SFTPFailure(f"listing of {path.decode()} failed (injected)")
            async for name in super().scandir(path):
                yield name

        async def read(self, file_obj: Any, offset: int, size: int) -> bytes:
            if counters.read_delay_s:
                await asyncio.sleep(counters.read_delay_s)
            return super().read(file_obj, offset, size)

        async def write(self, file_obj: Any, offset: int, data: bytes) -> int:
            if counters.write_delay_s and offset > 0:
                counters.writes_held += 1
                await asyncio.sleep(counters.write_delay_s)
            return super().write(file_obj, offset, data)

        async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
            counters.rename_requests[_client_path(oldpath)] += 1
            if counters.fail_renames:
                raise asyncssh.SFTPFailure(f"rename of {oldpath.decode()} failed (injected)")
            if counters.on_rename is not None:
                counters.on_rename(_client_path(oldpath))
            if counters.rename_delay_s:
                await asyncio.sleep(counters.rename_delay_s)
            super().posix_rename(oldpath, newpath)
            counters.renames[_client_path(oldpath)] += 1

        def remove(self, path: bytes) -> None:
            super().remove(path)
            counters.removes[_client_path(path)] += 1

    class Auth(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            connections.add(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.difference_update([c for c in connections if c.is_closed()])

        def begin_auth(self, user: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, user: str, key: asyncssh.SSHKey) -> bool:
            return user == username and authorized.validate(key, "127.0.0.1", "127.0.0.1") is not None

    acceptor = await asyncssh.listen("127.0.0.1", port, server_host_keys=[host_key], server_factory=Auth,
                                     sftp_factory=Counting, allow_scp=False)
    port = acceptor.sockets[0].getsockname()[1]
    known = f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n"
    server = SftpServer(port, root, client_key.export_private_key().decode(), known, counters, acceptor)
    try:
        yield server
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        for conn in list(connections):
            conn.close()
            await conn.wait_closed()
        for file_obj in list(open_files):
            file_obj.close()


@contextmanager
def threaded_sftp_server(root: Path) -> Iterator[SftpServer]:
    """:func:`sftp_server` on its own event loop in a thread, for tests that block (waiting on a
    ``sluice run`` subprocess); its counters may be read and its delays set from the test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    manager = sftp_server(root)
    server = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _client_path(path: bytes) -> str:
    """A path as the client sent it (before the chroot maps it), relative to the root:
    ``b"/in/a.csv"`` and ``b"in/./a.csv"`` are ``in/a.csv``."""
    return posixpath.normpath("/" + path.decode()).lstrip("/")


class S3Server:
    """moto's S3 in a thread (werkzeug, a thread per request) on ``port`` (0: an ephemeral one),
    counting requests as ``(method, path)``; each request waits ``latency_s`` seconds first (a
    remote store's round trip, without the server's CPU)."""

    def __init__(self, port: int = 0, latency_s: float = 0.0) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self.requests: Counter[tuple[str, str]] = Counter()
        self.latency_s = latency_s
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests[(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))] += 1
            if self.latency_s:
                time.sleep(self.latency_s)
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", port, counting, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, bucket: str) -> int:
        """GET requests of objects of ``bucket`` (downloads; listings are GETs of the bucket)."""
        return sum(n for (m, p), n in self.requests.items() if m == "GET" and p.startswith(f"/{bucket}/"))

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).close()
        self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def azurite(workdir: Path) -> Server:
    """Azurite's blob service, in memory."""
    if not AZURITE.exists():
        raise RuntimeError(f"{AZURITE} is missing; run scripts/setup.d/40-files.sh")
    port = free_port()
    cmd = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
           "--disableTelemetry", "--skipApiVersionCheck", "--silent"]
    url = f"http://127.0.0.1:{port}/devstoreaccount1"
    server = _start(cmd, url, "?comp=list", workdir)
    return server


def azure_container(url: str, name: str) -> Any:
    """Create container ``name`` on Azurite at ``url`` (its account URL); returns its client."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(account_url=url, credential={"account_name": "devstoreaccount1",
                                                             "account_key": AZURITE_KEY})
    container = service.get_container_client(name)
    for _ in range(50):
        try:
            container.create_container()
            return container
        except Exception as exc:  # Azurite may need a moment after its port opened
            if "ContainerAlreadyExists" in str(exc):
                return container
            time.sleep(0.1)
    raise RuntimeError(f"cannot create container {name} on {url}")

