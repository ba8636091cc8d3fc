"""Helpers of the file tests: the two-step config (listing pipe + files pipe) over one system."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime import Runtime


def two_step(system: dict[str, Any], *, listing: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
             listing_pipe: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A ``system``, pipe ``listing`` (file_listing -> dataset ``listing``) and pipe ``ingest``
    (files over ``listing`` -> dataset ``ingest``)."""
    return [
        {"_id": "drop", **system},
        {"_id": "listing", "type": "pipe", **(listing_pipe or {}),
         "source": {"type": "file_listing", "system": "drop", **(listing or {})}},
        {"_id": "ingest", "type": "pipe",
         "source": {"type": "files", "system": "drop", "listing_dataset": "listing", "primary_key": "id",
                    "retry_backoff_s": 0, **(files or {})}},
    ]


async def run_both(rt: Runtime) -> tuple[Any, Any]:
    """Run the listing pipe, then the files pipe; both results."""
    return await rt.run_pipe("listing"), await rt.run_pipe("ingest")


async def live(rt: Runtime, dataset: str) -> dict[str, dict[str, Any]]:
    """Latest non-deleted entities by ``_id``."""
    return {e["_id"]: e for e in await rt.entities(dataset, limit=1_000_000) if not e.get("_deleted")}


def write(path: Path, text: str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def csv_rows(ids: Iterable[object], prefix: str = "v") -> str:
    return "id,value\n" + "".join(f"{i},{prefix}{i}\n" for i in ids)
