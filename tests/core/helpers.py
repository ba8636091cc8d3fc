"""Small helpers for core tests (no fixtures here)."""

from __future__ import annotations

from pathlib import Path

import orjson


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def file_pipe(pid: str, path: str, **extra) -> dict:
    return {"_id": pid, "type": "pipe", "source": {"type": "file", "path": path, "primary_key": "id"}, **extra}


def dataset_pipe(pid: str, dataset: str, **extra) -> dict:
    return {"_id": pid, "type": "pipe", "source": {"type": "dataset", "dataset": dataset}, **extra}


async def pg_rows(store, sql: str, *args) -> list[tuple]:
    """Rows of a query on a PostgresStore's database (white-box checks of its tables)."""
    import asyncpg

    conn = await asyncpg.connect(store.dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def is_postgres(store) -> bool:
    from runtime.store import PostgresStore

    return isinstance(store, PostgresStore)
