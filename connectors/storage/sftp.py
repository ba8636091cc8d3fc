"""``system:sftp``: a pool of SSH connections (asyncssh) shared by every pipe using the system.

The host key is checked against ``known_hosts`` by default (pinned, like OpenSSH's
``StrictHostKeyChecking yes``); skipping the check takes the explicit key
``insecure_skip_host_key_check: true`` and logs a warning each time the connection opens (DIL's
SFTP connector turns checking off silently when no known_hosts is given: dil.md §6.3). The
pool holds up to ``connections`` connections, each opened on first use (an operation takes the
connection with the fewest operations in flight, so a second one opens only when operations
overlap), kept alive (``keepalive_s``) and opened again after it dropped: a dropped connection, a
refused connect or a timeout is a :class:`TransientError`, retried by
:class:`~connectors.storage.base.FileSystem`, and closes only that connection. Requests of the
operations sharing a connection are pipelined on its SFTP session; downloads use asyncssh's
parallel block reads.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import asyncssh
import structlog
from pydantic import Field, model_validator

from connectors.storage.base import FileInfo, FileSystem, FileSystemConfig, NotFound
from runtime.components import ComponentConfig, closing
from runtime.config.secrets import Secret, reveal
from runtime.errors import FatalError, TransientError

log = structlog.get_logger("sluice.files")
T = TypeVar("T")
_TRANSIENT = (asyncssh.DisconnectError, asyncssh.ConnectionLost, asyncssh.ChannelOpenError, ConnectionError,
              TimeoutError, OSError, EOFError)


class SftpSystemConfig(FileSystemConfig):
    """``{"_id": "partner", "type": "system:sftp", "host": "sftp.example.com", "username": "in",
    "private_key": "$SECRET(partner-key)", "known_hosts": "known_hosts"}``.

    Attributes:
        host: the server's name or address.
        port: its SSH port.
        username: the user (may be a secret).
        password: password authentication (a secret).
        private_key: an OpenSSH or PEM private key, the key's text (a secret).
        private_key_passphrase: the key's passphrase (a secret).
        known_hosts: the server's host key(s): a known_hosts file (relative paths resolve against
            the config directory) or its lines themselves. Required unless
            ``insecure_skip_host_key_check``.
        insecure_skip_host_key_check: accept any host key (a man in the middle could read and
            change the files); logged as a warning whenever the connection opens.
        root: directory every path is relative to (``""``: the login directory).
        keepalive_s: seconds between SSH keepalives (0: none).
        connect_timeout_s: seconds to open a connection and log in.
        connections: SSH connections the pool opens at most (each one login and one SFTP
            session; servers often limit logins per user, hence the default of 1).
    """

    type: Literal["system:sftp"]
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    username: str | Secret
    password: Secret | None = None
    private_key: Secret | None = None
    private_key_passphrase: Secret | None = None
    known_hosts: str | None = None
    insecure_skip_host_key_check: bool = False
    root: str = ""
    keepalive_s: float = Field(default=30.0, ge=0)
    connect_timeout_s: float = Field(default=15.0, gt=0)
    connections: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _safe(self) -> SftpSystemConfig:
        if self.known_hosts is None and not self.insecure_skip_host_key_check:
            raise ValueError("known_hosts is required (the server's host key, pinned); to accept any host key "
                             "set insecure_skip_host_key_check: true")
        if self.known_hosts is not None and self.insecure_skip_host_key_check:
            raise ValueError("set known_hosts or insecure_skip_host_key_check, not both")
        if self.password is None and self.private_key is None:
            raise ValueError("set password or private_key (or both)")
        return self


class _Connection:
    """One connection of the pool: the SSH connection and its SFTP session (None until opened
    and after a drop), and the operations using it."""

    def __init__(self) -> None:
        self.ssh: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient | None = None
        self.lock = anyio.Lock()
        self.busy = 0


@dataclass(frozen=True)
class _Lease:
    """A connection of the pool lent to one operation, with the session it had then."""

    conn: _Connection
    sftp: asyncssh.SFTPClient


class SftpSystem(FileSystem):
    """See the module docstring."""

    Config: ClassVar[type[ComponentConfig]] = SftpSystemConfig
    config: SftpSystemConfig

    async def open(self) -> None:
        self._pool = [_Connection() for _ in range(self.config.connections)]
        c = self.config
        self._options: dict[str, Any] = {
            "port": c.port, "username": reveal(c.username), "keepalive_interval": c.keepalive_s or None,
            "connect_timeout": c.connect_timeout_s, "agent_path": None, "client_keys": None,
            "password": reveal(c.password) if c.password is not None else None,
        }
        if c.private_key is not None:
            passphrase = reveal(c.private_key_passphrase) if c.private_key_passphrase is not None else None
            try:
                self._options["client_keys"] = [asyncssh.import_private_key(reveal(c.private_key), passphrase)]
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise FatalError(f"system {self.id!r}: private_key cannot be read: {exc}") from None
        if c.known_hosts is None:
            self._options["known_hosts"] = None
        elif "\n" in c.known_hosts.strip() or " " in c.known_hosts.strip():
            self._options["known_hosts"] = asyncssh.import_known_hosts(c.known_hosts)
        else:
            path = Path(c.known_hosts)
            path = path if path.is_absolute() else Path(self.config_dir) / path
            if not path.is_file():
                raise FatalError(f"system {self.id!r}: known_hosts file {str(path)!r} does not exist")
            self._options["known_hosts"] = str(path)

    async def close(self) -> None:
        for conn in self._pool:
            async with conn.lock:
                await _close(conn)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_Lease]:
        """The pool's connection with the fewest operations in flight, and its SFTP session
        (opened first if need be), for one operation."""
        conn = min(self._pool, key=lambda c: (c.busy, c.sftp is None))  # an idle open one before a new login
        conn.busy += 1
        try:
            yield _Lease(conn, await self._opened(conn))
        finally:
            conn.busy -= 1

    async def _opened(self, conn: _Connection) -> asyncssh.SFTPClient:
        async with conn.lock:
            if conn.sftp is not None:
                return conn.sftp
            c = self.config
            if c.insecure_skip_host_key_check:
                log.warning("sftp.host_key_not_checked", system=self.id, host=c.host,
                            reason="insecure_skip_host_key_check is set: any host key is accepted")
            try:
                conn.ssh = await asyncssh.connect(c.host, **self._options)
                try:
                    conn.sftp = await conn.ssh.start_sftp_client()
                except BaseException:  # cancelled too: no login left open without its session
                    conn.ssh.close()
                    conn.ssh = None
                    raise
            except asyncssh.HostKeyNotVerifiable as exc:
                raise FatalError(f"system {self.id!r}: the host key of {c.host}:{c.port} is not in known_hosts "
                                 f"({exc.reason}); add it, or check who answers") from None
            except asyncssh.PermissionDenied as exc:
                raise FatalError(f"system {self.id!r}: login as {reveal(c.username)!r} refused: {exc.reason}") from None
            except _TRANSIENT as exc:
                await _close(conn)
                raise TransientError(f"system {self.id!r}: cannot connect to {c.host}:{c.port}: "
                                     f"{type(exc).__name__}: {exc}") from exc
            except asyncssh.Error as exc:  # e.g. no SFTP subsystem: the connection is closed, not kept
                await _close(conn)
                raise FatalError(f"system {self.id!r}: no SFTP session on {c.host}:{c.port}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            return conn.sftp

    async def _drop(self, lease: _Lease) -> None:
        """Close the lease's connection, unless another operation already opened a new one."""
        async with lease.conn.lock:
            if lease.conn.sftp is lease.sftp:
                await _close(lease.conn)

    def _full(self, path: str) -> str:
        root = self.config.root
        path = path.strip("/")
        return posixpath.join(root, path) if root else (path or ".")

    async def _call(self, lease: _Lease, path: str, awaitable: Awaitable[T]) -> T:
        """``awaitable`` (a request on the lease's session) with its errors made Sluice's, naming ``path``;
        a lost connection is dropped from the pool (opened again by the next operation)."""
        try:
            return await awaitable
        except asyncssh.SFTPNoSuchFile as exc:
            raise NotFound(f"{self.where(path)} does not exist") from exc
        except asyncssh.SFTPPermissionDenied as exc:
            raise FatalError(f"{self.where(path)}: permission denied ({exc.reason})") from exc
        except asyncssh.SFTPError as exc:
            if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
                await self._drop(lease)
                raise TransientError(f"{self.where(path)}: connection lost: {exc.reason}") from exc
            raise FatalError(f"{self.where(path)}: {exc.reason}") from exc
        except _TRANSIENT as exc:
            await self._drop(lease)
            raise TransientError(f"{self.where(path)}: {type(exc).__name__}: {exc}") from exc

    async def _list(self, path: str, recursive: bool, chunk: int) -> AsyncIterator[list[FileInfo]]:
        async with self._session() as lease, closing(self._walk(lease, path.strip("/"), recursive, chunk)) as walk:
            async for files in walk:
                yield files

    async def _walk(self, lease: _Lease, top: str, recursive: bool, chunk: int) -> AsyncIterator[list[FileInfo]]:
        sftp = lease.sftp
        if not stat.S_ISDIR((await self._call(lease, top, sftp.stat(self._full(top)))).permissions or 0):
            raise FatalError(f"{self.where(top)} is not a directory")
        dirs, files = [top], []
        while dirs:
            here = dirs.pop()
            names = sftp.scandir(self._full(here))
            while True:
                try:
                    entry = await self._call(lease, here, names.__anext__())
                except StopAsyncIteration:
                    break
                if entry.filename in (".", "..", b".", b".."):
                    continue
                fname = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
                rel = f"{here}/{fname}" if here else fname
                mode = entry.attrs.permissions or 0
                if stat.S_ISDIR(mode):
                    if recursive:
                        dirs.append(rel)
                elif stat.S_ISREG(mode):
                    files.append(FileInfo(rel, entry.attrs.size or 0, float(entry.attrs.mtime or 0)))
                    if len(files) >= chunk:
                        yield files
                        files = []
        if files:
            yield files

    async def _download(self, path: str, dest: Path) -> int:
        async with self._session() as s:
            await self._call(s, path, s.sftp.get(self._full(path), str(dest)))
        return dest.stat().st_size

    async def _upload(self, source: Path, path: str) -> None:
        async with self._session() as s:
            await self._makedirs(s, path)
            await self._call(s, path, s.sftp.put(str(source), self._full(path)))

    async def _delete(self, path: str) -> None:
        async with self._session() as s:
            await self._call(s, path, s.sftp.remove(self._full(path)))

    async def _move(self, path: str, to: str) -> None:
        async with self._session() as s:
            await self._makedirs(s, to)
            await self._call(s, path, s.sftp.posix_rename(self._full(path), self._full(to)))

    async def _stat(self, path: str) -> FileInfo | None:
        async with self._session() as s:
            try:
                attrs = await self._call(s, path, s.sftp.stat(self._full(path)))
            except NotFound:
                return None
        return FileInfo(path.strip("/"), attrs.size or 0, float(attrs.mtime or 0))

    async def _makedirs(self, s: _Lease, path: str) -> None:
        parent = posixpath.dirname(path.strip("/"))
        if parent:
            await self._call(s, parent, s.sftp.makedirs(self._full(parent), exist_ok=True))


async def _close(conn: _Connection) -> None:
    """Close ``conn``'s session and connection (its lock held by the caller); a later operation
    opens them again."""
    sftp, ssh, conn.sftp, conn.ssh = conn.sftp, conn.ssh, None, None
    if sftp is not None:
        sftp.exit()
    if ssh is not None:
        ssh.close()
        with anyio.move_on_after(5):
            await ssh.wait_closed()
