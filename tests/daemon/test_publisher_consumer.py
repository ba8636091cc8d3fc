"""A second Sluice consumes a publisher of a real daemon with the ``rest`` source, incrementally
(issue 4: "a second sluice ... can consume it with the rest source").

Daemon A (a real ``sluice serve`` process) has a receiver pipe ``people`` (JSON push) and a
publisher pipe ``people-out`` over that dataset. The consumer is a :class:`Runtime` in the test
process with its own data directory: a ``system:rest`` pointing at A with A's read token and a
``rest`` source on ``/api/publishers/people-out/entities`` that sends ``since`` and pages with
``limit`` (paging type ``since``: the next page starts after the last ``_updated`` received).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime import Runtime, metrics
from tests.daemon.conftest import READ, Api

PAGE = 4


def producer() -> list[dict[str, Any]]:
    return [
        {"_id": "people", "type": "pipe", "source": {"type": "http_endpoint"}},
        {"_id": "people-out", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
         "sink": {"type": "http_endpoint"}},
    ]


def consumer(url: str) -> list[dict[str, Any]]:
    return [
        {"_id": "sluice-a", "type": "system:rest", "base_url": url,
         "auth": {"type": "bearer", "token": "$SECRET(A_READ_TOKEN)"},
         "retry_strategy": {"default": {"retry": False}}},
        {"_id": "people-copy", "type": "pipe", "batch_size": PAGE, "source": {
            "type": "rest", "system": "sluice-a", "url": "/api/publishers/people-out/entities",
            "supports_since": True, "is_chronological": True, "updated_expression": "{{ _updated }}",
            "since_property_name": "since",
            "paging": {"type": "since", "page_size": PAGE, "size_param": "limit"}}},
    ]


def content(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity without the store's own bookkeeping (``_updated``, ``_ts``, hashes...)."""
    return {k: v for k, v in entity.items() if not k.startswith("_") or k in ("_id", "_deleted")}


async def latest(api: Api, dataset: str) -> dict[str, dict[str, Any]]:
    """A's latest version of every entity of ``dataset`` (deleted ones included), by ``_id``."""
    entities = await api.get(f"/api/datasets/{dataset}/entities", params={"limit": "100000"})
    return {e["_id"]: content(e) for e in entities}


async def copied(rt: Runtime, dataset: str) -> dict[str, dict[str, Any]]:
    return {e["_id"]: content(e) for e in await rt.entities(dataset, limit=100_000)}


def pages() -> float:
    """Requests the consumer's system made so far, read from this process's metrics."""
    found = metrics.REGISTRY.get_sample_value(
        "sluice_system_requests_total", {"system": "sluice-a", "status": "200"})
    return found or 0.0


async def push(api: Api, entities: list[dict[str, Any]]) -> None:
    await api.post("/api/receivers/people/entities", json=entities)


async def test_second_sluice_consumes_a_publisher_incrementally(
    start_daemon: Any, session: Any, write_config: Any, tmp_path: Path, monkeypatch: Any,
) -> None:
    served = start_daemon(producer())
    api = Api(served, session)
    await push(api, [{"_id": f"p{n:02}", "name": f"person {n}", "age": 20 + n} for n in range(10)])
    await push(api, [{"_id": "p10", "name": "person 10", "age": 30}])

    monkeypatch.setenv("A_READ_TOKEN", READ)
    cfg = write_config(consumer(served.url))
    async with Runtime(cfg, data_dir=tmp_path / "consumer") as rt:
        before = pages()
        first = await rt.run_pipe("people-copy")
        assert first.ok, first.error
        assert first.read == 11 and first.new == 11
        assert pages() - before == 4  # 4 + 4 + 3, then the empty page that ends the run
        assert await copied(rt, "people-copy") == await latest(api, "people")
        since = (await rt.pipe_state("people-copy")).since
        assert since is not None

        # Nothing changed: the next run asks for changes after since and reads none.
        before = pages()
        idle = await rt.run_pipe("people-copy")
        assert idle.ok and idle.read == 0 and idle.new == idle.changed == idle.deleted == 0
        assert pages() - before == 1

        # Inserts, updates and deletes in A (two receiver batches: 6 versions in all).
        await push(api, [{"_id": "p11", "name": "person 11", "age": 31},
                         {"_id": "p02", "name": "person 2", "age": 99},
                         {"_id": "p05", "_deleted": True}])
        await push(api, [{"_id": "p12", "name": "person 12", "age": 32},
                         {"_id": "p07", "_deleted": True},
                         {"_id": "p11", "name": "person eleven", "age": 31}])
        before = pages()
        second = await rt.run_pipe("people-copy")
        assert second.ok, second.error
        assert pages() - before == 3  # 4 + 1, then the empty page
        # Only the changes are read; p11 was written twice in A, the publisher serves its latest
        # version once (a dataset source reads latest versions after since).
        assert second.read == 5, second
        assert (second.new, second.changed, second.deleted) == (2, 1, 2), second
        mine = await copied(rt, "people-copy")
        assert mine == await latest(api, "people")
        assert mine["p05"]["_deleted"] and mine["p07"]["_deleted"]
        assert mine["p11"]["name"] == "person eleven" and mine["p02"]["age"] == 99
        assert len([e for e in mine.values() if not e.get("_deleted")]) == 11
        assert (await rt.pipe_state("people-copy")).since > since
