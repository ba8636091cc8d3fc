"""State stores: the :class:`StateStore` protocol and its implementations.

:func:`make_store` picks one from a URL: ``sqlite:///path/to/file.db`` or a plain path (SQLite,
the embedded default), or ``postgresql://user@host/database`` (PostgreSQL, several processes
sharing one store).
"""

from __future__ import annotations

from pathlib import Path

from runtime.errors import ConfigError, ConfigProblem
from runtime.store.postgres import PostgresStore
from runtime.store.protocol import (
    Checkpoint,
    DatasetInfo,
    LogEvent,
    PipeState,
    RunStart,
    StateStore,
    TripInfo,
    WorkUnit,
    WriteResult,
)
from runtime.store.sqlite import SqliteStore

__all__ = [
    "Checkpoint",
    "DatasetInfo",
    "LogEvent",
    "PipeState",
    "PostgresStore",
    "RunStart",
    "SqliteStore",
    "StateStore",
    "TripInfo",
    "WorkUnit",
    "WriteResult",
    "make_store",
]

DEFAULT_FILE = "sluice.db"


def make_store(url: str | None, data_dir: Path) -> StateStore:
    """Build (not open) the store named by ``url``.

    Args:
        url: ``sqlite:///ABSOLUTE/PATH``, ``sqlite:RELATIVE/PATH``, a plain file path, or None for
            ``DATA_DIR/sluice.db``; or ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``
            (also ``postgres://``), an existing database the schema is created in.
        data_dir: the data directory; relative paths are not resolved against it.

    Raises:
        ConfigError: the URL's scheme is not supported.
    """
    if url is None:
        return SqliteStore(data_dir / DEFAULT_FILE)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        path = path[2:] if path.startswith("///") else path.removeprefix("//")
        return SqliteStore(Path(path))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            [ConfigProblem("<settings>", None, "store", f"unsupported store scheme {scheme!r}; use sqlite:///PATH "
                                           "or postgresql://USER@HOST/DATABASE")]
        )
    return SqliteStore(Path(url))
