"""Fixtures of the file tests: real servers on 127.0.0.1 (see tests/servers/storage.py) and a
:class:`Backend` per file system, so one test runs against each."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.storage import (
    AZURITE_KEY,
    S3Server,
    SftpServer,
    azure_container,
    azurite,
    sftp_server,
    threaded_sftp_server,
)


def _secret(name: str, value: str) -> str:
    """``$SECRET(name)`` for ``value``, kept in this process's environment (where Sluice looks)."""
    os.environ[f"SLUICE_TEST_{name}"] = value
    return f"$SECRET(SLUICE_TEST_{name})"


class Backend:
    """One file system under test: its system config, how a test puts and removes files, and
    how many downloads its server counted (None where no server counts)."""

    name = ""
    sets_mtime = False  # whether put() can give a file an old mtime

    def system(self) -> dict[str, Any]:
        raise NotImplementedError

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def downloads(self) -> int:
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        """Every file's path and content."""
        raise NotImplementedError


class LocalBackend(Backend):
    """``system:local``: a directory (no server, so no request counts)."""

    name, sets_mtime = "local", True

    def __init__(self, root: Path) -> None:
        self.root = root

    def system(self) -> dict[str, Any]:
        return {"type": "system:local", "root": str(self.root)}

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mtime is not None:
            os.utime(target, (mtime, mtime))

    def remove(self, path: str) -> None:
        (self.root / path).unlink()

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def downloads(self) -> int:
        raise NotImplementedError("a local directory counts no requests")

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in self.root.rglob("*") if p.is_file()}


class SftpBackend(LocalBackend):
    name, sets_mtime = "sftp", True

    def __init__(self, server: SftpServer) -> None:
        super().__init__(server.root)
        self.server = server

    def system(self) -> dict[str, Any]:
        return {"type": "system:sftp", "host": "127.0.0.1", "port": self.server.port, "username": "sluice",
                "private_key": _secret("SFTP_KEY", self.server.client_key), "known_hosts": self.server.known_hosts}

    def downloads(self) -> int:
        return sum(self.server.counters.reads.values())


class S3Backend(Backend):
    name = "s3"

    def __init__(self, server: S3Server) -> None:
        self.server, self.bucket = server, f"b-{uuid.uuid4().hex[:8]}"
        self.client = server.client()
        self.client.create_bucket(Bucket=self.bucket)

    def system(self) -> dict[str, Any]:
        return {"type": "system:s3", "bucket": self.bucket, "endpoint": self.server.url, "region": "us-east-1",
                "access_key_id": "test", "secret_access_key": _secret("S3_SECRET", "test"), "retry_backoff_s": 0.05}

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=path, Body=data)

    def remove(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=path)

    def exists(self, path: str) -> bool:
        return self.client.list_objects_v2(Bucket=self.bucket, Prefix=path).get("KeyCount", 0) > 0

    def downloads(self) -> int:
        return self.server.gets(self.bucket)

    def files(self) -> dict[str, bytes]:
        keys = [o["Key"] for o in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])]
        return {k: self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read() for k in keys}


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, url: str) -> None:
        self.url, self.name_ = url, f"c{uuid.uuid4().hex[:8]}"
        self.container = azure_container(url, self.name_)

    def system(self) -> dict[str, Any]:
        return {"type": "system:azure", "container": self.name_, "account": "devstoreaccount1",
                "access_key": _secret("AZURE_KEY", AZURITE_KEY), "endpoint": self.url, "retry_backoff_s": 0.05}

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        self.container.upload_blob(path, data, overwrite=True)

    def remove(self, path: str) -> None:
        self.container.delete_blob(path)

    def exists(self, path: str) -> bool:
        return any(True for _ in self.container.list_blobs(name_starts_with=path))

    def downloads(self) -> int:
        raise NotImplementedError("Azurite does not count requests")

    def files(self) -> dict[str, bytes]:
        return {b.name: self.container.download_blob(b.name).readall() for b in self.container.list_blobs()}


@pytest.fixture
async def sftp(tmp_path: Path) -> AsyncIterator[SftpServer]:
    root = tmp_path / "sftp"
    root.mkdir()
    async with sftp_server(root) as server:
        yield server


@pytest.fixture
def threaded_sftp(tmp_path: Path) -> Iterator[SftpServer]:
    """The SFTP server on its own event loop in a thread, for tests that wait on a ``sluice run``
    subprocess (its counters and delays may be used from the test)."""
    root = tmp_path / "sftp"
    root.mkdir()
    with threaded_sftp_server(root) as s:
        yield s


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["local", "sftp", "s3", "azure"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "local":
        (tmp_path / "local").mkdir()
        yield LocalBackend(tmp_path / "local")
    elif request.param == "sftp":
        root = tmp_path / "sftp"
        root.mkdir()
        async with sftp_server(root) as server:
            yield SftpBackend(server)
    elif request.param == "s3":
        yield S3Backend(request.getfixturevalue("s3_server"))
    else:
        yield AzureBackend(request.getfixturevalue("azurite_url"))
