"""``system:local``, ``system:s3``, ``system:azure`` and ``system:gcs``: one obstore store each.

obstore (Rust ``object_store``) gives one async API over a local directory and the three object
stores: listings streamed in chunks, downloads streamed in chunks, multipart uploads, renames
(a copy and a delete on object stores). Its own retries are turned off (``max_retries: 0``) so
that :class:`~connectors.storage.base.FileSystem` retries, counts and logs them like every other
system. Errors are translated here: obstore's ``NotFoundError`` -> :class:`NotFound`, permission
and authentication errors -> :class:`FatalError`, any other store error (connection refused or
reset, timeouts, 5xx and throttling answers) -> :class:`TransientError`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import obstore
from obstore import exceptions as obx
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store
from pydantic import Field

from connectors.storage.base import FileInfo, FileSystem, FileSystemConfig, NotFound, join
from runtime.components import ComponentConfig
from runtime.config.secrets import Secret, reveal
from runtime.errors import FatalError, TransientError

T = TypeVar("T")
CHUNK_BYTES = 1 << 20


class LocalSystemConfig(FileSystemConfig):
    """``{"_id": "drop", "type": "system:local", "root": "data/drop"}``: a local directory
    (development and tests).

    Attributes:
        root: the directory; relative paths resolve against the config directory. It must exist.
    """

    type: Literal["system:local"]
    root: str = Field(min_length=1)


class _RemoteConfig(FileSystemConfig):
    """Keys the object stores share.

    Attributes:
        prefix: key prefix every path is relative to (``""``: the bucket's root).
        endpoint: override the store's URL (S3-compatible stores, emulators:
            ``http://127.0.0.1:9000``); ``http://`` endpoints are allowed.
        timeout_s: seconds one request may take.
        connect_timeout_s: seconds to open a connection.
    """

    prefix: str = ""
    endpoint: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class S3SystemConfig(_RemoteConfig):
    """``{"_id": "lake", "type": "system:s3", "bucket": "b", "region": "eu-west-1",
    "access_key_id": "$SECRET(aws-key)", "secret_access_key": "$SECRET(aws-secret)"}``.

    Attributes:
        bucket: the bucket.
        region: its region.
        access_key_id: the access key id (may be a secret); unset: obstore's usual environment
            (``AWS_*`` variables, instance metadata).
        secret_access_key: the secret access key (a secret).
        session_token: a session token of temporary credentials (a secret).
        virtual_hosted_style: address the bucket as ``bucket.endpoint`` (AWS) instead of
            ``endpoint/bucket`` (path style, what most S3-compatible servers expect).
    """

    type: Literal["system:s3"]
    bucket: str = Field(min_length=1)
    region: str = "us-east-1"
    access_key_id: str | Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    virtual_hosted_style: bool = False


class AzureSystemConfig(_RemoteConfig):
    """``{"_id": "blobs", "type": "system:azure", "account": "acct", "container": "in",
    "access_key": "$SECRET(azure-key)"}``.

    Attributes:
        account: the storage account.
        container: the blob container.
        access_key: the account key (a secret); or ``sas_token``; unset: obstore's usual
            environment (``AZURE_*`` variables, managed identity).
        sas_token: a shared access signature (a secret).
        use_emulator: talk to Azurite with its well-known development account
            (``endpoint`` still overrides the URL).
    """

    type: Literal["system:azure"]
    account: str = Field(default="devstoreaccount1", min_length=1)
    container: str = Field(min_length=1)
    access_key: Secret | None = None
    sas_token: Secret | None = None
    use_emulator: bool = False


class GcsSystemConfig(_RemoteConfig):
    """``{"_id": "gcs", "type": "system:gcs", "bucket": "b", "service_account_key":
    "$SECRET(gcs-key)"}``.

    Attributes:
        bucket: the bucket.
        service_account_key: the service account's JSON key (a secret); unset: obstore's usual
            environment (``GOOGLE_*`` variables, application default credentials).
    """

    type: Literal["system:gcs"]
    bucket: str = Field(min_length=1)
    service_account_key: Secret | None = None


def _client(c: _RemoteConfig) -> Any:
    return {"allow_http": True, "timeout": timedelta(seconds=c.timeout_s),
            "connect_timeout": timedelta(seconds=c.connect_timeout_s)}


NO_RETRIES: Any = {"max_retries": 0, "retry_timeout": timedelta(seconds=1)}


def make_store(config: Any, config_dir: str = ".") -> Any:
    """The obstore store of a system config (no request is sent).

    Raises:
        FatalError: ``system:local``'s root is not a directory.
    """
    if isinstance(config, LocalSystemConfig):
        root = Path(config.root) if os.path.isabs(config.root) else Path(config_dir) / config.root
        if not root.is_dir():
            raise FatalError(f"system:local root {str(root)!r} is not a directory; create it or fix root")
        return LocalStore(root.resolve())
    prefix = config.prefix.strip("/") or None
    if isinstance(config, S3SystemConfig):
        s3: dict[str, Any] = {"region": config.region, "virtual_hosted_style_request": config.virtual_hosted_style}
        if config.endpoint:
            s3["endpoint"] = config.endpoint
        if config.access_key_id is not None:
            s3["access_key_id"] = reveal(config.access_key_id)
        if config.secret_access_key is not None:
            s3["secret_access_key"] = reveal(config.secret_access_key)
        if config.session_token is not None:
            s3["session_token"] = reveal(config.session_token)
        return S3Store(config.bucket, prefix=prefix, client_options=_client(config), retry_config=NO_RETRIES, **s3)
    if isinstance(config, AzureSystemConfig):
        az: dict[str, Any] = {"account_name": config.account, "use_emulator": config.use_emulator}
        if config.endpoint:
            az["endpoint"] = config.endpoint
        if config.access_key is not None:
            az["access_key"] = reveal(config.access_key)
        if config.sas_token is not None:
            az["sas_key"] = reveal(config.sas_token)
        return AzureStore(config.container, prefix=prefix, client_options=_client(config),
                          retry_config=NO_RETRIES, **az)
    gcs: dict[str, Any] = {}
    if config.endpoint:
        gcs["base_url"] = config.endpoint
    if config.service_account_key is not None:
        gcs["service_account_key"] = reveal(config.service_account_key)
    return GCSStore(config.bucket, prefix=prefix, client_options=_client(config), retry_config=NO_RETRIES, **gcs)


class ObjectStoreSystem(FileSystem):
    """A file system on one obstore store (see the module docstring)."""

    Config: ClassVar[type[ComponentConfig]] = FileSystemConfig

    async def open(self) -> None:
        self.store = make_store(self.config, self.config_dir)
        self.root: Path | None = Path(self.store.prefix) if isinstance(self.config, LocalSystemConfig) else None

    async def _call(self, path: str, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except obx.NotFoundError as exc:
            raise NotFound(f"{self.where(path)} does not exist") from exc
        except (obx.PermissionDeniedError, obx.UnauthenticatedError) as exc:
            raise FatalError(f"{self.where(path)}: {type(exc).__name__}: {_first_line(exc)}") from exc
        except (obx.InvalidPathError, obx.NotSupportedError, obx.UnknownConfigurationKeyError) as exc:
            raise FatalError(f"{self.where(path)}: {_first_line(exc)}") from exc
        except (obx.BaseError, OSError, TimeoutError) as exc:
            raise TransientError(f"{self.where(path)}: {type(exc).__name__}: {_first_line(exc)}") from exc

    async def _list(self, path: str, recursive: bool, chunk: int) -> AsyncIterator[list[FileInfo]]:
        prefix = path.strip("/")
        if self.root is not None and not (self.root / prefix).is_dir():
            raise NotFound(f"{self.where(prefix or '.')} is not a directory")
        depth = prefix.count("/") + 1 if prefix else 0
        stream = obstore.list(self.store, prefix or None, chunk_size=chunk)
        while True:
            try:
                metas = await self._call(prefix, stream.__anext__())
            except StopAsyncIteration:
                return
            files = [FileInfo(m["path"], m["size"], m["last_modified"].timestamp(), m["e_tag"], m["version"])
                     for m in metas if recursive or m["path"].count("/") == depth]
            if files:
                yield files

    async def _download(self, path: str, dest: Path) -> int:
        result = await self._call(path, obstore.get_async(self.store, path))
        stream = result.stream(min_chunk_size=CHUNK_BYTES)
        first = await self._chunk(path, stream)
        second = await self._chunk(path, stream) if first else b""
        if not second:  # the whole object in one chunk (a small file): one write, one thread hop
            await anyio.to_thread.run_sync(dest.write_bytes, first)
            return len(first)
        written = 0
        async with await anyio.open_file(dest, "wb") as out:
            buf: bytes | None = first
            while buf:
                await out.write(buf)
                written += len(buf)
                buf = second or await self._chunk(path, stream)
                second = b""
        return written

    async def _chunk(self, path: str, stream: Any) -> bytes:
        """The next chunk of a download stream, ``b""`` at its end."""
        try:
            return bytes(await self._call(path, stream.__anext__()))
        except StopAsyncIteration:
            return b""

    async def _upload(self, source: Path, path: str) -> None:
        await self._call(path, obstore.put_async(self.store, path, source))

    async def _delete(self, path: str) -> None:
        if self.root is not None and not (self.root / path).exists():
            raise NotFound(f"{self.where(path)} does not exist")
        await self._call(path, obstore.delete_async(self.store, path))

    async def _move(self, path: str, to: str) -> None:
        await self._call(path, obstore.rename_async(self.store, path, join(to)))

    async def _stat(self, path: str) -> FileInfo | None:
        try:
            m = await self._call(path, obstore.head_async(self.store, path))
        except NotFound:
            return None
        return FileInfo(m["path"], m["size"], m["last_modified"].timestamp(), m["e_tag"], m["version"])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class LocalSystem(ObjectStoreSystem):
    """``system:local``: a local directory."""

    Config = LocalSystemConfig


class S3System(ObjectStoreSystem):
    """``system:s3``: an S3 bucket (or any S3-compatible store through ``endpoint``)."""

    Config = S3SystemConfig


class AzureSystem(ObjectStoreSystem):
    """``system:azure``: an Azure Blob Storage container."""

    Config = AzureSystemConfig


class GcsSystem(ObjectStoreSystem):
    """``system:gcs``: a Google Cloud Storage bucket."""

    Config = GcsSystemConfig
