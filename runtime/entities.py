"""Entities: reserved fields, canonical JSON and the content hash (Sesam's entity data model).

An entity is a JSON object (a ``dict``) with a string ``_id``. Root keys starting with ``_`` are
reserved; only ``_id`` and ``_deleted`` are kept on write, the dataset then adds:

===============  ==========================================================================
``_updated``     integer offset of this version in the dataset log (0, 1, 2, ...)
``_previous``    offset of the previous version of the same ``_id``, or ``None``
``_ts``          write time, integer microseconds since the Unix epoch (informational)
``_hash``        content hash, 32 lowercase hex characters (see :func:`content_hash`)
===============  ==========================================================================

``_deleted`` counts only when it is the value ``true``; any other value means "not deleted" and is
normalised away. Keys starting with ``_`` below the root belong to the data and are kept.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

Entity = dict[str, Any]
"""An entity: a JSON object with a string ``_id``."""

KEPT_RESERVED = frozenset({"_id", "_deleted"})
GENERATED = ("_updated", "_previous", "_ts", "_hash")

_SORTED = orjson.OPT_SORT_KEYS
_HASH_BYTES = 16


def strip_reserved(entity: Entity) -> Entity:
    """Return the entity as a dataset stores it: ``_``-keys other than ``_id``/``_deleted`` dropped.

    ``_deleted`` is kept only when it is exactly ``True``. The input is not modified; when it has
    nothing to drop it is returned as is (no copy).
    """
    for key in entity:
        if key[:1] == "_" and (key not in KEPT_RESERVED or (key == "_deleted" and entity[key] is not True)):
            break
    else:
        return entity
    out = {k: v for k, v in entity.items() if k[:1] != "_"}
    out["_id"] = entity.get("_id")
    if entity.get("_deleted") is True:
        out["_deleted"] = True
    return out


def canonical_json(entity: Entity) -> bytes:
    """Canonical JSON bytes of what the hash covers: sorted keys, no whitespace, UTF-8.

    Covers every root key not starting with ``_``, plus ``_id`` and ``_deleted`` (``true`` or
    absent). Key order in the input does not matter.

    Raises:
        TypeError: the entity holds a value JSON cannot represent.
    """
    stripped = strip_reserved(entity)
    return orjson.dumps(stripped, option=_SORTED)


def content_hash(entity: Entity) -> str:
    """The ``_hash`` of an entity: BLAKE2b-128 of :func:`canonical_json`, as 32 hex characters.

    Two entities with equal hashes are the same version; a dataset write whose hash equals the
    latest version's hash for that ``_id`` is a no-op (Sesam's change tracking).
    """
    return hashlib.blake2b(canonical_json(entity), digest_size=_HASH_BYTES).hexdigest()


def is_deleted(entity: Entity) -> bool:
    """True when the entity is a deletion marker (``_deleted`` is exactly ``True``)."""
    return entity.get("_deleted") is True


def dumps(value: Any) -> bytes:
    """Serialise to compact JSON bytes (orjson); non-string keys are an error."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes or text (orjson).

    Raises:
        orjson.JSONDecodeError: (a ``ValueError``) the input is not JSON.
    """
    return orjson.loads(data)
