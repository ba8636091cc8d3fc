"""``system:sftp``: one SSH connection (asyncssh) shared by every pipe using the system.

The host key is checked against ``known_hosts`` by default (pinned, like OpenSSH's
``StrictHostKeyChecking yes``); skipping the check takes the explicit key
``insecure_skip_host_key_check: true`` and logs a warning each time the connection opens (DIL's
SFTP connector turns checking off silently when no known_hosts is given: dil.md §6.3). The
connection is opened on first use, kept alive (``keepalive_s``) and opened again after it dropped:
a dropped connection, a refused connect or a timeout is a :class:`TransientError`, retried by
:class:`~connectors.storage.base.FileSystem`. Requests of concurrent operations are pipelined on
one SFTP session; downloads use asyncssh's parallel block reads.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import asyncssh
import structlog
from pydantic import Field, model_validator

from connectors.storage.base import FileInfo, FileSystem, FileSystemConfig, NotFound
from runtime.components import ComponentConfig
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
        connect_timeout_s: seconds to open the connection and log in.
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


class SftpSystem(FileSystem):
    """See the module docstring."""

    Config: ClassVar[type[ComponentConfig]] = SftpSystemConfig
    config: SftpSystemConfig

    async def open(self) -> None:
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = anyio.Lock()
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
        await self._drop()

    async def _session(self) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is not None:
                return self._sftp
            c = self.config
            if c.insecure_skip_host_key_check:
                log.warning("sftp.host_key_not_checked", system=self.id, host=c.host,
                            reason="insecure_skip_host_key_check is set: any host key is accepted")
            try:
                self._conn = await asyncssh.connect(c.host, **self._options)
                self._sftp = await self._conn.start_sftp_client()
            except asyncssh.HostKeyNotVerifiable as exc:
                raise FatalError(f"system {self.id!r}: the host key of {c.host}:{c.port} is not in known_hosts "
                                 f"({exc.reason}); add it, or check who answers") from None
            except asyncssh.PermissionDenied as exc:
                raise FatalError(f"system {self.id!r}: login as {reveal(c.username)!r} refused: {exc.reason}") from None
            except _TRANSIENT as exc:
                await self._drop_locked()
                raise TransientError(f"system {self.id!r}: cannot connect to {c.host}:{c.port}: "
                                     f"{type(exc).__name__}: {exc}") from exc
            except asyncssh.Error as exc:  # e.g. no SFTP subsystem: the connection is closed, not kept
                await self._drop_locked()
                raise FatalError(f"system {self.id!r}: no SFTP session on {c.host}:{c.port}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            return self._sftp

    async def _drop(self) -> None:
        async with self._lock:
            await self._drop_locked()

    async def _drop_locked(self) -> None:
        sftp, conn, self._sftp, self._conn = self._sftp, self._conn, None, None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with anyio.move_on_after(5):
                await conn.wait_closed()

    def _full(self, path: str) -> str:
        root = self.config.root
        path = path.strip("/")
        return posixpath.join(root, path) if root else (path or ".")

    async def _call(self, path: str, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except asyncssh.SFTPNoSuchFile as exc:
            raise NotFound(f"{self.where(path)} does not exist") from exc
        except asyncssh.SFTPPermissionDenied as exc:
            raise FatalError(f"{self.where(path)}: permission denied ({exc.reason})") from exc
        except asyncssh.SFTPError as exc:
            if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
                await self._drop()
                raise TransientError(f"{self.where(path)}: connection lost: {exc.reason}") from exc
            raise FatalError(f"{self.where(path)}: {exc.reason}") from exc
        except _TRANSIENT as exc:
            await self._drop()
            raise TransientError(f"{self.where(path)}: {type(exc).__name__}: {exc}") from exc

    async def _list(self, path: str, recursive: bool, chunk: int) -> AsyncIterator[list[FileInfo]]:
        sftp = await self._session()
        top = path.strip("/")
        if not stat.S_ISDIR((await self._call(top, sftp.stat(self._full(top)))).permissions or 0):
            raise FatalError(f"{self.where(top)} is not a directory")
        dirs, files = [top], []
        while dirs:
            here = dirs.pop()
            names = sftp.scandir(self._full(here))
            while True:
                try:
                    entry = await self._call(here, names.__anext__())
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
        sftp = await self._session()
        await self._call(path, sftp.get(self._full(path), str(dest)))
        return dest.stat().st_size

    async def _upload(self, source: Path, path: str) -> None:
        sftp = await self._session()
        await self._makedirs(sftp, path)
        await self._call(path, sftp.put(str(source), self._full(path)))

    async def _delete(self, path: str) -> None:
        sftp = await self._session()
        await self._call(path, sftp.remove(self._full(path)))

    async def _move(self, path: str, to: str) -> None:
        sftp = await self._session()
        await self._makedirs(sftp, to)
        await self._call(path, sftp.posix_rename(self._full(path), self._full(to)))

    async def _stat(self, path: str) -> FileInfo | None:
        sftp = await self._session()
        try:
            attrs = await self._call(path, sftp.stat(self._full(path)))
        except NotFound:
            return None
        return FileInfo(path.strip("/"), attrs.size or 0, float(attrs.mtime or 0))

    async def _makedirs(self, sftp: asyncssh.SFTPClient, path: str) -> None:
        parent = posixpath.dirname(path.strip("/"))
        if parent:
            await self._call(parent, sftp.makedirs(self._full(parent), exist_ok=True))
