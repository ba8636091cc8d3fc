"""The ``files`` source: step 2 of DIL's two-step file download (dil.md §5.3), each listed file a
work unit (:mod:`runtime.workunits`) with its row in the ledger.

Planning makes one unit per entity of the listing dataset (key: the path; variables: the listing
entity). A unit's **watermark** is ``{"fingerprint", "post_action"}`` of the version it committed,
the fingerprint being ``size:mtime:etag:version`` from the listing; its **checkpoint** while it
runs is ``{"fingerprint", "records"}``, the records of that version committed so far. So the
ledger states of anchors-wave2 §B.3 are: listed (``pending``, no watermark), fetching
(``running`` with a checkpoint), committed (watermark ``deletions: "pending"`` while the ids a new
version no longer gives are deleted, then ``post_action: "pending"``), post-action
done (``post_action: "done"`` with ``removed: true``: the file left its listed path, which the
listing then expects; or ``post_action: "done"`` alone when none is configured).

Rules (every run reads every listed unit; there is no timestamp cursor):

- a unit whose listed fingerprint equals its watermark's is not downloaded, whatever its mtime;
  a pending post-action is finished (a crash between the commit and the post-action);
- a new or changed file (``ready`` in the listing) is downloaded into a temporary local file
  (memory holds one chunk); a download whose size differs from the listed one (the file changed
  since the listing) fails the unit transiently. The file is checked whole (a malformed file, or
  a new version with no records where the earlier gave entities (``if_file_empty: fail``),
  commits nothing: its unit fails
  naming the file and line, or with ``on_malformed: dead_letter`` it is recorded in
  ``dead_letter_dataset`` and skipped until it changes), then parsed in batches, each committed
  with the unit's checkpoint; a unit resumed after a crash skips the records already committed;
- per-file deletion tracking: when a file that was ingested before comes in a new version, once
  that version's entities are committed (the source waits until the ledger shows it), the
  entities of the file that still carry another version in ``file_property`` (a hop index on
  ``file_property.path`` of the datasets the pipe writes, read a page at a time) get
  ``_deleted``; a crash in between leaves ``deletions: "pending"``, finished without reading the
  file again. None into a sink that writes no dataset;
- a rescan (``sluice run --full``, the API's ``start-rescan``) reads every listed file again from
  its first record, fingerprints and checkpoints ignored, and deletes, per file, the ids it gave
  before that it no longer gives (after a change of ``primary_key`` or ``id_expression``, say;
  it holds the file's ids in memory to compare them);
- after the last batch is committed (the source waits until the ledger shows it), the
  post-action (``after_ingest``) runs, then is recorded as done; a crash between the two finishes
  the post-action on the next run without downloading the file again. Into a sink that commits
  later (``holds_commits``: a ``files`` sink, at its next rename) the source does not wait: the
  unit ends with ``post_action: "pending"`` and the next run makes the post-action.

A file that leaves the listing retires its unit; the entities it gave stay.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.records import CsvKeys, Records, format_of
from connectors.storage.base import FileSystem, join
from connectors.storage.listing import (
    POST_ACTIONS_ON,
    REMOVED,
    ListingConfig,
    file_system,
    fingerprint,
    refresh_listing,
    same_file,
    version_of,
)
from connectors.storage.staging import staging_dir
from runtime.components import ComponentConfig, Source, SourceConfig
from runtime.dtl.joinkeys import join_key
from runtime.entities import IF_HASH, Entity
from runtime.errors import BadDataError, TransientError
from runtime.templates import Template, check_template
from runtime.workunits import Unit, UnitPage, WorkUnitsConfig

log = structlog.get_logger("sluice.files")
COMMIT_WAIT_S = 120.0


class AfterIngest(BaseModel):
    """``after_ingest``: what happens to a file once its data is committed.

    Attributes:
        delete: delete the file.
        move_to: move it into this directory or prefix (relative to the system's root), under
            its own path (``in/a.csv`` -> ``archive/in/a.csv``); pick one the listing does not list.
    """

    model_config = ConfigDict(extra="forbid")
    delete: bool = False
    move_to: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> AfterIngest:
        if self.delete and self.move_to:
            raise ValueError("set delete or move_to, not both")
        if not self.delete and not self.move_to:
            raise ValueError("set delete: true or move_to")
        return self


class FilesSourceConfig(CsvKeys, SourceConfig):
    """``{"type": "files", "system": "partner", "listing_dataset": "partner-files",
    "primary_key": "id"}``.

    Attributes:
        system: the file system the listing came from.
        listing_dataset: the dataset a ``file_listing`` pipe writes (one unit per entity).
        listing: the one-pipe form, instead of ``listing_dataset``: the ``file_listing`` keys
            (``path``, ``recursive``, ``include``, ``exclude``, ``done_marker``,
            ``minimum_age_s``); each run lists first, into an internal listing dataset
            (``files-listing-<hash of system and listing>``, or ``listing_dataset`` when set),
            with the same ledger and semantics. A listing that fails fails the run before any
            file is read; files that left the listing retire their units (their entities stay).
        format: ``csv``, ``json`` (an array, streamed) or ``ndjson``; unset: from each file's
            suffix (``.csv``, ``.json``, ``.ndjson``, ``.jsonl``, each optionally ``.gz``).
        compression: ``gzip``, ``none``, or ``auto`` (gzip when the name ends in ``.gz``).
        payload_property: JSON only: dotted path to the array inside the document.
        primary_key: field name, or list of field names joined with ``:``, that gives ``_id``.
        id_expression: Jinja2 template giving ``_id`` (Sesam); sees the record's fields and
            ``file`` (``{"path", "version"}``).
        file_property: the property each entity gets with ``{"path", "version"}`` of its file
            (``version``: the fingerprint); per-file deletion tracking needs it; null: none (and no
            per-file deletion tracking).
        on_malformed: ``fail``: the file's unit fails (retried after a backoff, ``dead`` after
            ``max_attempts``); ``dead_letter``: the file is recorded in ``dead_letter_dataset``
            and not read again until it changes.
        dead_letter_dataset: where ``on_malformed: dead_letter`` records files:
            ``{"_id": "<pipe>:<path>", "pipe", "path", "version", "error"}``.
        if_file_empty: a new version of a file with no records, where the earlier version gave
            entities: ``fail`` (like a malformed file: the entities are kept; Sesam's
            ``if_source_empty`` per file) or ``delete`` (they get ``_deleted``).
        after_ingest: post-action (``delete`` or ``move_to``), after the file's data is
            committed; recorded in the ledger, so done once.
        concurrency: files downloaded and parsed at the same time.
        max_attempts: failed attempts after which a file's unit is ``dead`` (``sluice units
            retry`` puts it back).
        retry_backoff_s: seconds before a failed file is tried again, doubled per failed attempt.
    """

    type: Literal["files"]
    system: str = Field(min_length=1)
    listing_dataset: str | None = Field(default=None, min_length=1)
    listing: ListingConfig | None = None
    format: Literal["csv", "json", "ndjson"] | None = None
    compression: Literal["auto", "gzip", "none"] = "auto"
    payload_property: str | None = None
    primary_key: str | list[str] | None = None
    id_expression: str | None = None
    file_property: str | None = Field(default="source_file", min_length=1)
    on_malformed: Literal["fail", "dead_letter"] = "fail"
    dead_letter_dataset: str | None = Field(default=None, min_length=1)
    if_file_empty: Literal["fail", "delete"] = "fail"
    after_ingest: AfterIngest | None = None
    concurrency: int = Field(default=4, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_s: float = Field(default=30.0, ge=0)

    @field_validator("id_expression")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "id_expression")

    @model_validator(mode="after")
    def _consistent(self) -> FilesSourceConfig:
        if self.listing is None and self.listing_dataset is None:
            raise ValueError("set listing_dataset (the dataset of a file_listing pipe) or a listing block")
        if self.listing is not None and self.listing_dataset is None:
            key = orjson.dumps([self.system, self.listing.model_dump()], option=orjson.OPT_SORT_KEYS)
            self.listing_dataset = f"files-listing-{hashlib.sha1(key).hexdigest()[:12]}"
        if self.primary_key is not None and self.id_expression is not None:
            raise ValueError("set primary_key or id_expression, not both")
        if self.on_malformed == "dead_letter" and self.dead_letter_dataset is None:
            raise ValueError("on_malformed: dead_letter needs dead_letter_dataset")
        if self.payload_property is not None and self.format not in (None, "json"):
            raise ValueError("payload_property applies only to format json")
        if self.format not in (None, "csv") and (keys := self.csv_only_keys_set()):
            raise ValueError(f"{', '.join(keys)} appl{'ies' if len(keys) == 1 else 'y'} only to format csv")
        return self


class FilesSource(Source):
    """See the module docstring."""

    Config: ClassVar[type[ComponentConfig]] = FilesSourceConfig
    config: FilesSourceConfig

    @classmethod
    def work_units(cls, config: Any) -> WorkUnitsConfig | None:
        assert config.listing_dataset is not None  # set by the config's validator
        return WorkUnitsConfig(dataset=config.listing_dataset, key_property="_id",
                               max_concurrent_units=config.concurrency, max_attempts=config.max_attempts,
                               retry_backoff_s=config.retry_backoff_s)

    @classmethod
    def full_read(cls, config: Any) -> bool:
        return False  # deletion tracking is per file, never over the whole dataset

    @classmethod
    def datasets_written(cls, config: Any, pipe: str) -> list[str]:
        return [config.dead_letter_dataset] if config.dead_letter_dataset else []

    async def open(self) -> None:
        self.system: FileSystem = file_system(self.context, "files source")
        await anyio.to_thread.run_sync(staging_dir)  # the first call sweeps dead processes' leftovers
        c = self.config
        self.template = Template(c.id_expression, "id_expression") if c.id_expression else None
        store, pipe = self.context.store, self.context.pipe
        marker = c.listing_dataset if c.after_ingest else None  # the listing then expects its files to leave
        if (await store.pipe_state(pipe)).info.get(POST_ACTIONS_ON) != marker:
            await store.update_pipe_info(pipe, {POST_ACTIONS_ON: marker})
        if c.listing is not None:
            assert c.listing_dataset is not None  # set by the config's validator
            await refresh_listing(self.system, c.listing, self.context.store, c.listing_dataset, pipe=self.context.pipe,
                                  batch_size=self.context.run.batch_size)

    def unit_unchanged(self, variables: dict[str, Any], watermark: Any) -> bool:
        """True when the listed file's fingerprint is the one its unit committed and no
        post-action is pending: the unit is planned closed and not claimed (no download, no
        commit)."""
        done = watermark if isinstance(watermark, dict) else {}
        return done.get("fingerprint") == fingerprint(variables) and done.get("post_action") == "done"

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        raise NotImplementedError("the files source reads work units")
        yield []  # pragma: no cover

    async def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        """The pages of one file (see the module docstring).

        Raises:
            BadDataError: the file is malformed (names the file and line) and ``on_malformed`` is
                ``fail``.
            NotFound, TransientError: the file could not be downloaded.
            TransientError: the commit of a new version's entities was not seen within
                ``COMMIT_WAIT_S`` seconds (its deletions are made on the unit's next try).
        """
        listed, path = unit.variables, unit.variables.get("path") or unit.key
        fp = fingerprint(listed)
        done = unit.watermark if isinstance(unit.watermark, dict) else {}
        checkpoint = unit.checkpoint if isinstance(unit.checkpoint, dict) else {}
        if done.get("fingerprint") == fp:
            if done.get("deletions") == "pending":  # its entities committed, the ids it no longer gives not yet
                async for page in self._finish(unit.key, listed, fp, checkpoint, True, None):
                    yield page
            elif done.get("post_action") == "pending":
                yield UnitPage([], None, await self._post_action(path, fp, listed))
            return
        if listed.get("ready") is False:
            return  # still being written: a later listing makes it ready
        rescan = self.context.run.rescan
        # a rescan reads the file whole again: records skipped by an earlier checkpoint might have
        # been written under ids the config no longer gives
        skip = int(checkpoint.get("records") or 0) if checkpoint.get("fingerprint") == fp and not rescan else 0
        # an earlier version (or an earlier part of this one) may have given entities: once this
        # version's are committed, those it no longer gives are deleted (per-file deletion tracking)
        tracked = (self.config.file_property is not None and bool(self.context.writes)
                   and bool(done or skip or rescan))  # a sink that writes no dataset deletes nothing here
        # a rescan may read a version already read (its entities carry the same version): its ids
        # are compared one by one, so a changed id_expression or primary_key still deletes the old ones
        seen: set[str] | None = set() if tracked and rescan else None
        name = os.path.join(staging_dir(), f"{uuid.uuid4().hex}.download")  # created by the download
        try:
            written = await self.system.download(path, Path(name))
            if listed.get("size") is not None and written != listed["size"]:
                raise TransientError(f"{self.system.where(path)} changed since it was listed (listed "
                                     f"{listed['size']} bytes, downloaded {written}); read again after the next "
                                     "listing")
            records = self._records(name, path, fp)
            single = written <= SINGLE_PASS_BYTES and not records.gzip
            try:
                total, batches, batch = await anyio.to_thread.run_sync(_check_and_start, records, single)
                if total == 0 and tracked and self.config.if_file_empty == "fail" and await self._gave_before(path):
                    raise BadDataError(
                        "this version of the file has no records, its earlier one gave entities; "
                        "they are kept (if_file_empty: fail). Set if_file_empty: delete to delete them",
                        location=self.system.where(path))
            except BadDataError as exc:
                if self.config.on_malformed == "fail":
                    raise
                await self._dead_letter(path, fp, exc)
                yield UnitPage([], None, {"fingerprint": fp, "post_action": "done", "dead_lettered": True})
                return
            count = 0
            try:
                while batch is not None:
                    if seen is not None:
                        seen.update(e["_id"] for e in batch)
                    count += len(batch)
                    if count > skip:
                        fresh = batch[len(batch) - (count - skip):] if count - len(batch) < skip else batch
                        yield UnitPage(fresh, {"fingerprint": fp, "records": count})
                    # the check counted the records: no thread hop to learn that the last batch was the last
                    batch = await anyio.to_thread.run_sync(next, batches, None) if count < total else None
            finally:
                batches.close()
        finally:
            await anyio.to_thread.run_sync(_remove, name)  # off the event loop
        cp = {"fingerprint": fp, "records": count}
        if tracked:
            marker = {"fingerprint": fp, "deletions": "pending"}
            yield UnitPage([], cp, marker)  # a page of progress alone sends the batch holding the last one now
            if not await self._committed(unit.key, marker):
                raise TransientError(f"{self.system.where(path)}: the commit of its entities was not seen within "
                                     f"{COMMIT_WAIT_S} s; the ids it no longer gives are deleted on its next try")
        async for page in self._finish(unit.key, listed, fp, cp, tracked, seen):
            yield page

    async def _finish(self, key: str, listed: dict[str, Any], fp: str, cp: dict[str, Any], tracked: bool,
                      seen: set[str] | None) -> AsyncIterator[UnitPage]:
        """The end of a file's unit once its entities are committed: with ``tracked``, the
        deletions of the ids it no longer gives (:meth:`_gone`), then the post-action, or the final
        watermark."""
        path = listed.get("path") or key
        if tracked:
            async for gone in self._gone(path, fp, seen):
                yield UnitPage(gone, cp)
        if not self.config.after_ingest:
            yield UnitPage([], cp, {"fingerprint": fp, "post_action": "done"})
            return
        pending = {"fingerprint": fp, "post_action": "pending"}
        yield UnitPage([], cp, pending)
        if self.context.sink_holds_commits:
            # a files sink commits at its next rename, perhaps only at the run's end: waiting here
            # would stall the run; its next run makes the post-action
            log.info("files.post_action_deferred", system=self.system.id, path=path,
                     reason="the sink commits the file's entities at its next rename; the next run moves or deletes it")
            return
        yield UnitPage([], cp, pending)  # a page of progress alone sends the batch holding the last one now
        if await self._committed(key, pending):
            yield UnitPage([], None, await self._post_action(path, fp, listed))

    async def _committed(self, key: str, watermark: dict[str, Any]) -> bool:
        """Wait until the ledger holds ``watermark`` for unit ``key`` (the sink committed the
        file's last batch), at most ``COMMIT_WAIT_S`` seconds; False if it did not come (the
        deletions or the post-action it guards are then finished by the unit's next try)."""
        deadline = anyio.current_time() + COMMIT_WAIT_S
        delay = 0.005
        while anyio.current_time() < deadline:
            for row in await self.context.store.work_units(self.context.pipe, status="running"):
                if row.key == key and row.watermark == watermark:
                    return True
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)
        log.warning("files.commit_not_seen", path=key, waiting_for=watermark,
                    reason=f"commit not seen within {COMMIT_WAIT_S} s")
        return False

    def _records(self, local: str, path: str, fp: str) -> Records | _Tagged:
        c = self.config
        fmt = c.format or format_of(path)
        if fmt is None:
            raise BadDataError("cannot tell the format from the file name; set format on the source",
                               location=self.system.where(path))
        gz = c.compression == "gzip" or (c.compression == "auto" and path.lower().endswith(".gz"))
        records = Records(local, fmt, self.context.run.batch_size, name=self.system.where(path), gzip=gz,  # type: ignore[arg-type]
                          payload_property=c.payload_property, primary_key=c.primary_key, template=self.template,
                          csv_keys=c, variables={"file": {"path": path, "version": fp}})
        if c.file_property:
            return _Tagged(records, c.file_property, {"path": path, "version": fp})
        return records

    async def _gone(self, path: str, fp: str, seen: set[str] | None) -> AsyncIterator[list[Entity]]:
        """Deletions (a batch at a time, memory one page) of the ids the file gave before and
        does not give now, in the datasets this pipe writes, once this version's entities are
        committed: those whose ``file_property`` names another version than ``fp``, or, with
        ``seen`` (a rescan), those not in it. Each deletion is conditional (``_if_hash``, see
        :mod:`runtime.entities`): an id another file gave meanwhile (a record that moved between
        two files read at once, even on two cluster members) is not deleted."""
        prop = self.config.file_property
        assert prop is not None  # no per-file deletion tracking without it
        store, size = self.context.store, self.context.run.batch_size
        for dataset in self.context.writes:
            if not await store.ensure_index(dataset, [prop, "path"]):
                continue
            after: str | None = None
            while page := await store.index_page(dataset, [prop, "path"], join_key(path), after=after, limit=size):
                after = page[-1]["_id"]
                # _if_hash: deleted only if still this version, not one another file wrote meanwhile
                gone = [{"_id": e["_id"], "_deleted": True, IF_HASH: e["_hash"]} for e in page
                        if (e["_id"] not in seen if seen is not None else (e.get(prop) or {}).get("version") != fp)]
                if gone:
                    yield gone

    async def _gave_before(self, path: str) -> bool:
        """Whether the datasets this pipe writes hold an entity of the file (a version of it)."""
        prop = self.config.file_property
        assert prop is not None
        store = self.context.store
        for dataset in self.context.writes:
            if await store.ensure_index(dataset, [prop, "path"]) and await store.index_page(
                    dataset, [prop, "path"], join_key(path), after=None, limit=1):
                return True
        return False

    async def _post_action(self, path: str, fp: str, listed: dict[str, Any]) -> dict[str, Any]:
        """Delete or move the file whose version ``fp`` (listed as ``listed``) was committed; the
        unit's watermark after it. A file that changed since it was read (overwritten while its
        data was committed: :func:`same_file` says no) is left alone: its new version is read
        after the next listing, and only then moved or deleted. A file already gone was moved or
        deleted by an earlier attempt."""
        after = self.config.after_ingest
        assert after is not None  # a post-action is only pending with after_ingest
        now = await self.system.stat(path)
        if now is not None and not same_file(listed, now):
            log.warning("files.post_action_skipped", system=self.system.id, path=path, read=fp, now=version_of(now),
                        reason="the file changed since it was read; its new version is read after the next listing")
            return {"fingerprint": fp, "post_action": "done"}
        if now is None:
            pass  # done before (the run that did it ended before the ledger said so)
        elif after.delete:
            await self.system.delete(path)
            log.info("files.deleted", system=self.system.id, path=path)
        elif after.move_to:
            to = join(after.move_to, path)
            await self.system.move(path, to)
            log.info("files.moved", system=self.system.id, path=path, to=to)
        return {"fingerprint": fp, "post_action": "done", REMOVED: True}

    async def _dead_letter(self, path: str, fp: str, exc: BadDataError) -> None:
        dataset = self.config.dead_letter_dataset
        assert dataset is not None  # checked by the config
        pipe = self.context.pipe
        await self.context.store.write_batch(
            dataset, [{"_id": f"{pipe}:{path}", "pipe": pipe, "path": path, "version": fp, "error": str(exc)}],
            pipe=pipe, checkpoint=None)
        log.warning("files.dead_lettered", system=self.system.id, path=path, error=str(exc))


def _remove(name: str) -> None:
    """Remove a download's local file (absent when the download failed before creating it)."""
    Path(name).unlink(missing_ok=True)


Batches = Generator[list[Entity], None, None]
SINGLE_PASS_BYTES = 2 << 20
"""An uncompressed file of at most this many bytes (2 MiB) is parsed once, its batches held in
memory while they are committed; a larger or compressed one is checked in a first pass that keeps
nothing, then parsed again (memory does not grow with the file)."""


def _check_and_start(records: Records | _Tagged, single: bool) -> tuple[int, Batches, list[Entity] | None]:
    """Parse the whole file (raises its first :class:`BadDataError`) and start yielding its
    batches: (the number of records, the batches, the first batch or None), in one call (one
    thread hop). ``single``: keep the batches of this pass (a file of at most
    ``SINGLE_PASS_BYTES``, so memory stays bounded); else keep nothing and parse it again."""
    if single:
        kept = list(records.batches())
        return sum(map(len, kept)), (b for b in kept[1:]), kept[0] if kept else None
    total = sum(len(batch) for batch in records.batches())
    batches = records.batches()
    return total, batches, next(batches, None)


class _Tagged:
    """:class:`Records` whose entities carry ``{property: tag}`` (the file they came from)."""

    def __init__(self, records: Records, prop: str, tag: dict[str, str]) -> None:
        self.records, self.prop, self.tag = records, prop, tag
        self.gzip = records.gzip

    def batches(self) -> Generator[list[Entity], None, None]:
        for batch in self.records.batches():
            for e in batch:
                e[self.prop] = self.tag
            yield batch
