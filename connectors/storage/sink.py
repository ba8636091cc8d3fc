"""The ``files`` sink: a pipe's entities written as NDJSON or CSV files to a file system
(``system:local``, ``system:sftp``, ``system:s3``, ``system:azure``, ``system:gcs``).

Entities are appended to a local staging file (:mod:`connectors.storage.staging`); once it holds
``roll_entities`` entities or ``roll_bytes`` bytes (and at the end of a run) it is *rolled*:
uploaded under a temporary name (``.<name>.tmp`` beside the final one, so a reader listing
``*.ndjson`` never sees a partial file), renamed to ``<name>``, and only then is a checkpoint
committed: that of the last batch whose entities are all in renamed files. A crash or failure
before a rename leaves the checkpoint where the last rename left it: the next run writes the
entities after it again, into new files (at-least-once; a consumer deduplicates by ``_id`` and
``_updated``), and first deletes the temporary file left behind (its path is in the pipe's info,
``files_sink_uploading``, from before the upload until after the rename). File names: ``<prefix><UTC
time>-<run id>-<n>.<ndjson|csv>``, unique per roll.

Deletions (``_deleted: true``) are written like any entity (NDJSON) or as a row with ``_deleted``
true (CSV, when ``_deleted`` is one of the ``columns``; otherwise skipped).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import orjson
import structlog
from pydantic import Field, model_validator

from connectors.storage.base import FileSystem, join
from connectors.storage.listing import file_system
from connectors.storage.staging import staging_dir
from runtime.components import ComponentConfig, Sink
from runtime.entities import Entity
from runtime.store.protocol import Checkpoint, WriteResult
from runtime.workunits.executor import merge_progress

log = structlog.get_logger("sluice.files")
UPLOADING = "files_sink_uploading"
"""Key of the pipe's info: the temporary path of the file being uploaded and renamed, or null."""


class FilesSinkConfig(ComponentConfig):
    """``{"type": "files", "system": "lake", "path": "exports/customers", "format": "ndjson",
    "roll_entities": 100000}``.

    Attributes:
        system: the file system to write to.
        path: directory (SFTP, local) or key prefix (object stores) the files go into, relative
            to the system's root or prefix.
        prefix: start of every file name (``""``: none).
        format: ``ndjson`` (one entity per line, as stored) or ``csv`` (``columns`` required).
        columns: CSV only: the header, one entity property each (missing: empty; objects and
            lists: their JSON).
        delimiter: CSV field delimiter (one character).
        roll_entities: entities per file at most.
        roll_bytes: bytes per file at most (the file is rolled once it reaches them).
    """

    type: Literal["files"]
    system: str = Field(min_length=1)
    path: str = ""
    prefix: str = ""
    format: Literal["ndjson", "csv"] = "ndjson"
    columns: list[str] | None = Field(default=None, min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    roll_entities: int = Field(default=100_000, ge=1)
    roll_bytes: int = Field(default=256 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _csv_columns(self) -> FilesSinkConfig:
        if self.format == "csv" and not self.columns:
            raise ValueError("format csv needs columns (the header: one entity property each)")
        return self


class FilesSink(Sink):
    """See the module docstring."""

    Config: ClassVar[type[ComponentConfig]] = FilesSinkConfig
    config: FilesSinkConfig
    holds_commits: ClassVar[bool] = True  # a checkpoint is committed at the rename after it

    async def open(self) -> None:
        self.system: FileSystem = file_system(self.context, "files sink")
        await anyio.to_thread.run_sync(staging_dir)  # the first call sweeps dead processes' leftovers
        await self._remove_unfinished()
        self.rolled = 0
        self.staged: Path | None = None
        self.entities = 0
        self.bytes = 0
        self.pending: Checkpoint | None = None  # committed once the staged file is renamed

    async def close(self) -> None:
        if self.staged is not None:
            self.out.close()
            self.staged.unlink(missing_ok=True)  # a run that failed: its checkpoint was not committed
            self.staged = None

    async def write(self, entities: list[Entity]) -> WriteResult:
        raise NotImplementedError("the files sink writes through write_batch")

    async def write_batch(self, entities: Any, checkpoint: Checkpoint | None) -> WriteResult:
        """Stage the entities; roll the file when it is full, then commit ``checkpoint``."""
        for e in entities:
            line = self._encode(e)
            if line is None:
                continue
            if self.staged is None:
                fd, name = tempfile.mkstemp(prefix="sink-", dir=staging_dir())
                self.out = os.fdopen(fd, "wb")
                self.staged, self.entities, self.bytes = Path(name), 0, 0
                if self.config.format == "csv":
                    self._append(self._csv_row(self.config.columns or []))
            self._append(line)
            self.entities += 1
            if self.entities >= self.config.roll_entities or self.bytes >= self.config.roll_bytes:
                await self._roll()
        if checkpoint is not None:
            self._hold(checkpoint)
            if self.staged is None:  # everything so far is in renamed files
                await self._commit()
        return WriteResult(new=len(entities))

    async def finish(self, checkpoint: Checkpoint) -> WriteResult:
        if self.staged is not None:
            await self._roll()
        self._hold(checkpoint)
        await self._commit()
        return WriteResult()

    def _hold(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` until the next rename, with the work-unit progress of the ones it
        replaces (each names only its own batch's units: a unit done in an earlier batch must
        not lose its progress)."""
        if self.pending is not None and self.pending.units:
            units = dict(self.pending.units)
            merge_progress(units, checkpoint.units or {})
            checkpoint = replace(checkpoint, units=units)
        self.pending = checkpoint

    async def _commit(self) -> None:
        if self.pending is not None:
            await self.context.store.save_checkpoint(self.context.pipe, self.pending)
            self.pending = None

    async def _remove_unfinished(self) -> None:
        """Delete the temporary file an earlier run was uploading or renaming when it was killed
        or failed (recorded in the pipe's info before each upload, cleared after its rename)."""
        store, pipe = self.context.store, self.context.pipe
        left = (await store.pipe_state(pipe)).info.get(UPLOADING)
        if left:
            await self.system.delete(left)
            log.info("files.unfinished_removed", system=self.system.id, path=left)
            await store.update_pipe_info(pipe, {UPLOADING: None})

    async def _roll(self) -> None:
        assert self.staged is not None
        c = self.config
        self.rolled += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{c.prefix}{stamp}-{self.context.run.run_id}-{self.rolled:05}.{c.format}"
        final, temp = join(c.path, name), join(c.path, f".{name}.tmp")
        self.out.close()
        store, pipe = self.context.store, self.context.pipe
        await store.update_pipe_info(pipe, {UPLOADING: temp})
        await self.system.upload(self.staged, temp)
        await self.system.move(temp, final)
        await store.update_pipe_info(pipe, {UPLOADING: None})
        await self._commit()  # the earlier write_batch calls' entities are all in renamed files now
        log.info("files.written", system=self.system.id, path=final, entities=self.entities, bytes=self.bytes)
        self.staged.unlink()
        self.staged = None

    def _append(self, data: bytes) -> None:
        self.out.write(data)
        self.bytes += len(data)

    def _encode(self, e: Entity) -> bytes | None:
        if self.config.format == "ndjson":
            return orjson.dumps(e) + b"\n"
        columns = self.config.columns or []
        if e.get("_deleted") is True and "_deleted" not in columns:
            return None
        return self._csv_row([_cell(e.get(k)) for k in columns])

    def _csv_row(self, values: list[str]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.config.delimiter, lineterminator="\n").writerow(values)
        return buf.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
