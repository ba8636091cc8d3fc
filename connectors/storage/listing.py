"""The ``file_listing`` source: step 1 of DIL's two-step file download (dil.md §5.3), one entity
per file under a path or prefix of a file system.

Each entity is ``{"_id": path, "path", "size", "mtime", "etag", "version", "ready"}`` (``mtime``
ISO 8601 UTC; ``etag``/``version`` null where the store has none). Every run lists everything, so
it is a full run: a file no longer listed gets a ``_deleted`` version (deletion tracking, with the
dataset's circuit breaker: a listing that suddenly finds nothing on a populated dataset trips it
instead of deleting). A listing that cannot be made (the path vanished, permission denied, the
server down past its retries) fails the run, which never deletes. Files that a ``files`` pipe
reading the listing moved or deleted (``after_ingest``, recorded in its ledger) are expected to
leave: the listing writes their ``_deleted`` itself, so they never count towards the circuit
breaker; only files that vanished otherwise do.

Files still being written are held back: ``exclude`` patterns (``*.tmp``, ``*.part``) are never
listed; a file whose ``done_marker`` is missing, or that is younger than ``minimum_age_s``, or whose
size and mtime differ from the previous listing's (with ``minimum_age_s`` set, a file is ready only
once two listings saw it the same) is listed with ``ready: false`` and the ``files`` source does
not download it yet. Memory holds one batch of the listing (plus, with ``done_marker``, the set of
marker paths).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.storage.base import FileInfo, FileSystem
from runtime.components import ComponentConfig, Source, SourceConfig, closing
from runtime.dtl.joinkeys import join_key
from runtime.entities import Entity
from runtime.errors import FatalError
from runtime.store.protocol import StateStore


class ListingConfig(BaseModel):
    """What to list (the ``file_listing`` source's keys, also the ``files`` source's ``listing``
    block).

    Attributes:
        path: directory (SFTP, local) or key prefix (object stores) to list, relative to the
            system's root or prefix; ``""``: all of it.
        recursive: also list the files of subdirectories.
        include: glob patterns (``fnmatch``: ``*`` also matches ``/``) a file's path relative to
            ``path`` must match one of.
        exclude: glob patterns of files never listed (files being uploaded under a temporary
            name), matched like ``include``.
        done_marker: a suffix (``.done``): a file is ready only when ``<file><suffix>`` exists
            beside it; marker files themselves are not listed.
        minimum_age_s: a file is ready only when its mtime is at least this many seconds old and
            the previous listing saw the same size and mtime (a growing file is not fetched).
    """

    model_config = ConfigDict(extra="forbid")
    path: str = ""
    recursive: bool = False
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[str] = Field(default_factory=lambda: ["*.tmp", "*.part"])
    done_marker: str | None = Field(default=None, min_length=1)
    minimum_age_s: float = Field(default=0.0, ge=0)


class FileListingConfig(SourceConfig, ListingConfig):
    """``{"type": "file_listing", "system": "partner", "path": "outbox", "include": ["*.csv"]}``.

    Attributes:
        system: the file system (``system:local``, ``system:sftp``, ``system:s3``,
            ``system:azure``, ``system:gcs``).
    """

    type: Literal["file_listing"]
    system: str = Field(min_length=1)


POST_ACTIONS_ON = "files_post_actions_on"
"""The pipe-info key a ``files`` pipe with ``after_ingest`` sets to its listing dataset (null
without): how a listing finds the ledgers that record files it should expect to leave."""
REMOVED = "removed"
"""The key a ``files`` unit's watermark sets (true) once its post-action moved or deleted the
file: the file's leaving the listing is then expected."""


def fingerprint(listed: dict[str, Any]) -> str:
    """The version of a listed file: ``size:mtime:etag:version`` (any change makes a new one)."""
    return ":".join("" if listed.get(k) is None else str(listed[k]) for k in ("size", "mtime", "etag", "version"))


def version_of(f: FileInfo) -> str:
    """The :func:`fingerprint` a listing gives the file ``f`` (from a listing or a ``stat``)."""
    return fingerprint({"size": f.size, "mtime": iso(f.mtime), "etag": f.etag, "version": f.version})


def same_file(listed: dict[str, Any], now: FileInfo) -> bool:
    """Whether ``now`` (a ``stat``) is the version of the file the listing entity ``listed``
    describes: the same size, and the same entity tag where both give one (quotes aside: Azure's
    listing gives them bare, a ``stat`` quoted), else the same mtime to the second. Object
    versions and sub-second mtimes are not compared: a listing and a ``stat`` do not always both
    give them (object_store's listings leave S3's version id and GCS's generation out, and GCS's
    mtimes differ in precision)."""
    if listed.get("size") != now.size:
        return False
    tag = listed.get("etag")
    if tag and now.etag:
        return str(tag).strip('"') == now.etag.strip('"')
    return str(listed.get("mtime") or "")[:19] == iso(now.mtime)[:19]


def iso(mtime: float) -> str:
    """``mtime`` (seconds since the epoch) as ISO 8601 UTC (``2026-12-02T10:00:00.123456Z``)."""
    return datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")


def file_system(context: Any, kind: str) -> FileSystem:
    """The component's file system.

    Raises:
        FatalError: the ``system`` is not a file system.
    """
    system = context.system
    if not isinstance(system, FileSystem):
        raise FatalError(f"the {kind} needs a file system (system:local, system:sftp, system:s3, system:azure "
                         f"or system:gcs), got {type(system).__name__}; fix the system key", pipe=context.pipe)
    return system


class Lister:
    """Lists files as listing entities (shared by ``file_listing`` and the ``files`` source's
    one-pipe form).

    Args:
        system: the file system.
        config: what to list.
        previous: ``paths -> {path: (size, mtime)}`` of the previous listing (for
            ``minimum_age_s``), or None.
    """

    def __init__(self, system: FileSystem, config: ListingConfig, previous: Any = None) -> None:
        self.system, self.config, self.previous = system, config, previous
        self.root = config.path.strip("/")

    def _relative(self, path: str) -> str:
        return path[len(self.root) + 1:] if self.root and path.startswith(self.root + "/") else path

    def _wanted(self, rel: str) -> bool:
        c = self.config
        if any(fnmatch.fnmatchcase(rel, p) for p in c.exclude):
            return False
        if c.done_marker and rel.endswith(c.done_marker):
            return False
        return any(fnmatch.fnmatchcase(rel, p) for p in c.include)

    async def batches(self, size: int) -> AsyncIterator[list[Entity]]:
        """Listing entities in lists of at most ``size``.

        Raises:
            NotFound, FatalError, TransientError: the listing could not be made (see
                :meth:`FileSystem.list`).
        """
        c = self.config
        markers: set[str] = set()
        if c.done_marker:
            async with closing(self.system.list(self.root, recursive=c.recursive, chunk=size)) as pages:
                async for files in pages:
                    markers.update(f.path for f in files if f.path.endswith(c.done_marker))
        async with closing(self.system.list(self.root, recursive=c.recursive, chunk=size)) as pages:
            async for files in pages:
                wanted = [f for f in files if self._wanted(self._relative(f.path))]
                if not wanted:
                    continue
                seen = await self.previous([f.path for f in wanted]) if self.previous and c.minimum_age_s else {}
                now = time.time()
                yield [self._entity(f, markers, seen, now) for f in wanted]

    def _entity(self, f: FileInfo, markers: set[str], seen: dict[str, tuple[int, str]], now: float) -> Entity:
        c = self.config
        mtime = iso(f.mtime)
        ready = not c.done_marker or f.path + c.done_marker in markers
        if c.minimum_age_s:
            ready = ready and now - f.mtime >= c.minimum_age_s and seen.get(f.path) == (f.size, mtime)
        return {"_id": f.path, "path": f.path, "size": f.size, "mtime": mtime, "etag": f.etag,
                "version": f.version, "ready": ready}


async def previous_listing(store: StateStore, dataset: str, paths: list[str]) -> dict[str, tuple[int, str]]:
    """``{path: (size, mtime)}`` the listing dataset holds for ``paths``: one batched index look-up."""
    out: dict[str, tuple[int, str]] = {}
    if not await store.ensure_index(dataset, ["path"]):
        return out
    found = await store.index_lookup(dataset, ["path"], [join_key(p) for p in paths])
    for rows in found.values():
        for e in rows:
            out[e["path"]] = (e["size"], e["mtime"])
    return out


async def refresh_listing(system: FileSystem, config: ListingConfig, store: StateStore, dataset: str, *, pipe: str,
                          batch_size: int) -> int:
    """List into ``dataset`` (the ``files`` source's one-pipe form): the listed files' entities,
    then ``_deleted`` for the paths listed before and not now, only once the whole listing
    succeeded. Memory: one batch plus the set of listed paths. Returns the files listed.

    Raises:
        NotFound, FatalError, TransientError: the listing could not be made; nothing is deleted.
    """
    lister = Lister(system, config, lambda paths: previous_listing(store, dataset, paths))
    listed: set[str] = set()
    async with closing(lister.batches(batch_size)) as batches:
        async for batch in batches:
            await store.write_batch(dataset, batch, pipe=pipe, checkpoint=None, keep_versions=1)
            listed.update(e["_id"] for e in batch)
    since: int | None = None
    while True:
        entities, end = await store.read(dataset, since=since, limit=batch_size)
        gone = [{"_id": e["_id"], "_deleted": True} for e in entities
                if not e.get("_deleted") and e["_id"] not in listed]
        if gone:
            await store.write_batch(dataset, gone, pipe=pipe, checkpoint=None, keep_versions=1)
        if end is None or end == since or not entities:
            return len(listed)
        since = end


class FileListingSource(Source):
    """See the module docstring."""

    Config: ClassVar[type[ComponentConfig]] = FileListingConfig
    config: FileListingConfig

    async def open(self) -> None:
        self.system = file_system(self.context, "file_listing source")
        self.lister = Lister(self.system, self.config, self._previous)

    async def _previous(self, paths: list[str]) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for dataset in self.context.writes:
            out.update(await previous_listing(self.context.store, dataset, paths))
        return out

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        expected = await self._post_actioned()
        async with closing(self.lister.batches(self.context.run.batch_size)) as batches:
            async for batch in batches:
                for e in batch:
                    expected.pop(e["_id"], None)
                yield batch
        gone = list(expected.values())
        for start in range(0, len(gone), self.context.run.batch_size):
            yield gone[start:start + self.context.run.batch_size]

    async def _post_actioned(self) -> dict[str, Entity]:
        """``{path: its listing entity, deleted}`` for the files a ``files`` pipe reading this
        listing moved or deleted after ingesting them (its ledger records the post-action of the
        version listed): their leaving the listing is expected, so this run writes their
        ``_deleted`` itself and deletion tracking (and its circuit breaker) counts only files that
        vanished otherwise. One ledger read per consuming pipe, one batched look-up per dataset."""
        store, out = self.context.store, {}
        states = await store.pipe_states()
        for dataset in self.context.writes:
            removed: dict[str, str] = {}
            for pipe in [s.pipe for s in states if s.info.get(POST_ACTIONS_ON) == dataset]:
                for unit in await store.work_units(pipe, status="done"):
                    mark = unit.watermark if isinstance(unit.watermark, dict) else {}
                    if mark.get(REMOVED) is True and mark.get("post_action") == "done":
                        removed[unit.key] = str(mark.get("fingerprint"))
            if removed:
                live = await store.latest_versions(dataset, sorted(removed))
                out.update({e["_id"]: {**e, "_deleted": True} for e in live
                            if not e.get("_deleted") and fingerprint(e) == removed[e["_id"]]})
        return out
