"""Python transform of the demo: reshape ISO 3166-2 subdivisions (config/demo/pipes).

Used by the pipe ``subdivisions-enriched`` as ``iso_demo:enrich_subdivisions``; the config
directory is on ``sys.path``, so this module is importable by that name.

Input entity (dataset ``iso-subdivisions``, from Debian iso-codes)::

    {"_id": "GB-ABD", "code": "GB-ABD", "name": "Aberdeenshire", "type": "Council area",
     "parent": "GB-SCT", "_updated": 17, ...}

Output entity (dataset ``subdivisions-enriched``)::

    {"_id": "GB-ABD", "name": "Aberdeenshire", "category": "council area", "country": "GB",
     "local_code": "ABD", "level": 2, "parent_code": "GB-SCT"}

The source data is not uniform: ``parent`` is sometimes a full code (``"GB-SCT"``) and sometimes
only the local part (``"NX"`` for ``AZ-NX``); ``parent_code`` is always the full code. ``level``
is 1 for a subdivision without a parent and 2 below one. Deleted entities pass through as
deletions so the derived dataset follows the raw one.
"""

from __future__ import annotations

from typing import Any


def enrich(entity: dict[str, Any]) -> dict[str, Any]:
    """Reshape one subdivision entity (see the module docstring for both shapes)."""
    code = str(entity.get("code") or entity["_id"])
    if entity.get("_deleted") is True:
        return {"_id": entity["_id"], "_deleted": True}
    country, _, local = code.partition("-")
    parent = entity.get("parent")
    parent_code = None
    if isinstance(parent, str) and parent:
        parent_code = parent if "-" in parent else f"{country}-{parent}"
    return {
        "_id": entity["_id"],
        "name": entity.get("name"),
        "category": str(entity.get("type", "")).lower(),
        "country": country,
        "local_code": local,
        "level": 1 if parent_code is None else 2,
        "parent_code": parent_code,
    }


def enrich_subdivisions(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transform: one output entity per input entity, in order."""
    return [enrich(e) for e in entities]
