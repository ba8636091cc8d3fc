"""The outcome ledger's group commit on a real SQLite store: outcomes recorded in the background
share transactions, a drain commits what is buffered at once, and a failed commit is raised."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.rest import ledger as ledger_module
from connectors.rest.ledger import SENT, Ledger, Outcome
from runtime.errors import StoreError
from runtime.store.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """The SQLite store, counting the ledger's transactions (and failing them when told)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[int] = []
        self.fail = False

    async def write_batch(self, dataset: str, entities: Any, **kwargs: Any) -> Any:
        if self.fail:
            raise StoreError("disk full (test)")
        self.writes.append(len(entities))
        return await super().write_batch(dataset, entities, **kwargs)


@pytest.fixture
async def store(tmp_path: Path):
    s = CountingStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def outcome(i: int) -> Outcome:
    return Outcome(f"e{i:03}", SENT, "insert", "h" * 32, 1, 201, None, f"r{i}", {"status": 201}, "run")


async def test_background_outcomes_share_transactions_and_commit_without_a_drain(store: CountingStore) -> None:
    ledger = Ledger(store, "share-responses", "share", 2)
    for i in range(100):
        ledger.record_soon(outcome(i))
        await asyncio.sleep(0)  # senders interleave
    assert store.writes == []  # lingering for company
    for _ in range(500):
        if store.writes:
            break
        await asyncio.sleep(0.01)
    assert store.writes == [100]  # one transaction, no drain needed
    assert len(await store.latest_versions("share-responses", [f"e{i:03}" for i in range(100)])) == 100


async def test_a_drain_commits_at_once_and_raises_a_failed_commit(store: CountingStore, monkeypatch) -> None:
    monkeypatch.setattr(ledger_module, "LINGER_S", 30.0)
    ledger = Ledger(store, "share-responses", "share", 2)
    ledger.record_soon(outcome(1))
    started = time.perf_counter()
    await ledger.drain()  # does not wait out the linger
    assert store.writes == [1] and time.perf_counter() - started < 10
    store.fail = True
    ledger.record_soon(outcome(2))
    with pytest.raises(StoreError, match="a commit failed"):
        await ledger.drain()
    with pytest.raises(StoreError, match="an earlier commit failed"):
        await ledger.record(outcome(3))
