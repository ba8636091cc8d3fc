"""What every file system (``system:local``, ``system:sftp``, ``system:s3``, ``system:azure``,
``system:gcs``) offers the file sources and sinks, and the part they share: a concurrency limit for
every pipe using the system, retries of transient errors with exponential backoff, and the process
metrics ``system:rest`` records (``observe_request(system, "ok" | "error", seconds)`` per attempt,
``count_retry(system, reason)`` per retry; :mod:`runtime.metrics`).

Paths are POSIX-style strings relative to the system's root (``root`` of ``system:local`` and
``system:sftp``, ``prefix`` of the object stores); errors name a file as ``system_id:path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, ClassVar, TypeVar

import anyio
import structlog
from pydantic import Field

from runtime.components import ComponentConfig, System, closing
from runtime.errors import FatalError, TransientError
from runtime.metrics import count_retry, observe_request

log = structlog.get_logger("sluice.files")
T = TypeVar("T")


class FileSystemConfig(ComponentConfig):
    """Keys every file system accepts.

    Attributes:
        concurrency: operations (listings, downloads, uploads, deletes) in flight at once, shared by
            every pipe using the system.
        retries: attempts after the first for an operation that failed transiently (a dropped
            connection, a timeout, a 5xx or throttling answer of an object store).
        retry_backoff_s: seconds before the first retry, doubled for each further one.
    """

    concurrency: int = Field(default=8, ge=1)
    retries: int = Field(default=3, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)


@dataclass(frozen=True)
class FileInfo:
    """One file (object) as a listing finds it.

    Attributes:
        path: relative to the system's root or prefix, ``/``-separated.
        size: bytes.
        mtime: last modification, seconds since the epoch (SFTP: whole seconds).
        etag: the store's entity tag (object stores), None where there is none (SFTP).
        version: the store's object version (versioned buckets), else None.
    """

    path: str
    size: int
    mtime: float
    etag: str | None = None
    version: str | None = None


class NotFound(FatalError):
    """Raised when a path the operation needs does not exist (``system_id:path`` named)."""


class FileSystem(System):
    """Base of the file systems: subclasses implement the ``_``-operations, which raise
    :class:`TransientError` for what may succeed when repeated, and any other error for what will
    not; the public methods add the concurrency limit, retries and metrics."""

    Config: ClassVar[type[ComponentConfig]] = FileSystemConfig
    config: FileSystemConfig

    def __init__(self, config: Any, system_id: str) -> None:
        super().__init__(config, system_id)
        self.limiter = anyio.CapacityLimiter(config.concurrency)

    def where(self, path: str) -> str:
        """How errors name ``path``: ``system_id:path``."""
        return f"{self.id}:{path}"

    # -- operations subclasses implement ----------------------------------------------------
    def _list(self, path: str, recursive: bool, chunk: int) -> AsyncIterator[list[FileInfo]]:
        raise NotImplementedError

    async def _download(self, path: str, dest: Path) -> int:
        raise NotImplementedError

    async def _upload(self, source: Path, path: str) -> None:
        raise NotImplementedError

    async def _delete(self, path: str) -> None:
        raise NotImplementedError

    async def _move(self, path: str, to: str) -> None:
        raise NotImplementedError

    async def _stat(self, path: str) -> FileInfo | None:
        raise NotImplementedError

    # -- what sources and sinks call ----------------------------------------------------------
    async def list(self, path: str, *, recursive: bool, chunk: int = 1000) -> AsyncIterator[list[FileInfo]]:
        """The files under ``path`` (a directory or key prefix; ``""``: the root) in lists of at
        most ``chunk``, without holding the whole listing. A transient failure before the first
        list is retried; one after it fails the listing (a restarted listing would repeat files).
        The concurrency limit is taken for each list's fetch, never held while the caller has it:
        a caller that stops early, closing this generator in another task or never, leaves no
        token taken. Close it (:func:`runtime.components.closing`) to release the connection
        behind it at once.

        Raises:
            NotFound: ``path`` does not exist (SFTP, local; an object store has no directories,
                so an empty prefix lists nothing).
            TransientError: the listing failed transiently past its retries.
            FatalError: e.g. permission denied.
        """
        for attempt in range(self.config.retries + 1):
            started = False
            t0 = perf_counter()
            try:
                async with closing(self._list(path, recursive, chunk)) as pages:
                    while True:
                        async with self.limiter:
                            files = await anext(pages, None)
                        if files is None:
                            break
                        started = True
                        yield files
                observe_request(self.id, "ok", perf_counter() - t0)
                return
            except TransientError as exc:
                observe_request(self.id, "error", perf_counter() - t0)
                if started or attempt == self.config.retries:
                    raise
                await self._backoff("list", path, attempt, exc)
            except Exception:  # not retried (a refused host key, NotFound), but counted as _retried() does
                observe_request(self.id, "error", perf_counter() - t0)
                raise

    async def download(self, path: str, dest: Path) -> int:
        """Stream ``path`` into the local file ``dest`` (created or truncated): memory holds one
        chunk, never the file. Returns the bytes written.

        Raises:
            NotFound: the file is gone.
            TransientError: past the retries (each retry downloads from the start).
        """
        return await self._retried("download", path, lambda: self._download(path, dest))

    async def upload(self, source: Path, path: str) -> None:
        """Write the local file ``source`` to ``path`` (replacing it)."""
        await self._retried("upload", path, lambda: self._upload(source, path))

    async def delete(self, path: str) -> None:
        """Remove ``path``; a path already gone is not an error (so the operation is idempotent)."""
        with contextlib.suppress(NotFound):
            await self._retried("delete", path, lambda: self._delete(path))

    async def move(self, path: str, to: str) -> None:
        """Rename ``path`` to ``to`` (replacing ``to``). Idempotent: when ``path`` is gone and
        ``to`` exists, the move happened before.

        Raises:
            NotFound: neither exists.
        """
        try:
            await self._retried("move", path, lambda: self._move(path, to))
        except NotFound:
            if await self.stat(to) is None:
                raise

    async def stat(self, path: str) -> FileInfo | None:
        """The file's info, None when it does not exist."""
        return await self._retried("stat", path, lambda: self._stat(path))

    async def _retried(self, op: str, path: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.config.retries + 1):
            async with self.limiter:
                t0 = perf_counter()
                try:
                    result = await call()
                except TransientError as exc:
                    observe_request(self.id, "error", perf_counter() - t0)
                    if attempt == self.config.retries:
                        raise
                    failure = exc
                except BaseException:
                    observe_request(self.id, "error", perf_counter() - t0)
                    raise
                else:
                    observe_request(self.id, "ok", perf_counter() - t0)
                    return result
            await self._backoff(op, path, attempt, failure)
        raise AssertionError("unreachable")

    async def _backoff(self, op: str, path: str, attempt: int, exc: Exception) -> None:
        count_retry(self.id, op)
        delay = self.config.retry_backoff_s * 2**attempt
        log.warning("files.retry", system=self.id, op=op, path=path, attempt=attempt + 1, error=str(exc),
                    delay_s=delay)
        await anyio.sleep(delay)


def join(*parts: str) -> str:
    """``/``-joined path parts without empty segments (``join("a/", "/b")`` is ``a/b``)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
