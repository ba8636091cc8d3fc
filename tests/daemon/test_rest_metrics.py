"""A REST system's requests and retries in ``/metrics`` of a real daemon.

The daemon runs a ``rest`` source pipe against our fault-injection API (served in the test
process); ``/metrics`` is scraped and parsed with prometheus-client's parser. The expected counts
come from the API's own request log, not from the client.
"""

from __future__ import annotations

from typing import Any

from tests.daemon.conftest import Api
from tests.daemon.test_metrics import samples, value
from tests.servers.faulty_api import FaultyApi, serve

FAST = {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05}


def rest_config(url: str) -> list[dict[str, Any]]:
    return [
        {"_id": "crm-api", "type": "system:rest", "base_url": url, "read_timeout": 0.5,
         "retry_strategy": {"default": {"retry": False}, "500-599": FAST, "connection": FAST}},
        {"_id": "crm", "type": "pipe", "pump": {"mode": "manual"}, "batch_size": 10,
         "source": {"type": "rest", "system": "crm-api", "url": "/items/page", "payload_property": "data",
                    "id_expression": "{{ id }}",
                    "paging": {"type": "page", "page_size": 10, "size_param": "per_page"}}},
    ]


async def run_once(api: Api, runs: int) -> dict[str, Any]:
    await api.post("/api/pipes/crm/pump", json={"operation": "start"})

    async def done() -> Any:
        p = await api.pipe("crm")
        return p["runs"] >= runs and not p["running"] and p

    return await api.until(done, f"crm run {runs}")


async def test_rest_requests_and_retries_in_metrics(start_daemon: Any, session: Any) -> None:
    fake = FaultyApi()
    for n in range(25):
        fake.upsert(f"i{n:02}", value=n)
    async with serve(fake) as url:
        served = start_daemon(rest_config(url))
        api = Api(served, session)

        fake.faults.append({"status": 503, "path": "/items/page"})  # the first request only
        await run_once(api, 1)
        assert len(await api.get("/api/datasets/crm/entities")) == 25
        pages = len(fake.requests)  # the 503 included
        assert pages >= 4, fake.requests
        found = samples(await api.get("/metrics"))
        assert value(found, "sluice_system_requests_total", system="crm-api", status="200") == pages - 1
        assert value(found, "sluice_system_requests_total", system="crm-api", status="503") == 1
        assert value(found, "sluice_system_retries_total", system="crm-api", reason="503") == 1
        assert value(found, "sluice_system_request_duration_seconds_count", system="crm-api") == pages
        assert value(found, "sluice_system_request_duration_seconds_bucket", system="crm-api",
                     le="+Inf") == pages
        assert ("sluice_system_requests_total", (("status", "error"), ("system", "crm-api"))) not in found

        # A body cut off mid-stream and a response slower than read_timeout: two "error" requests
        # and one retry each (aiohttp itself re-sends a request whose kept-alive connection was
        # reset, so a reset is not a reliable single fault).
        fake.faults.extend([{"cut": True, "path": "/items/page"}, {"delay": 1.5, "path": "/items/page"}])
        await run_once(api, 2)
        assert not fake.faults
        total = len(fake.requests)
        found = samples(await api.get("/metrics"))
        assert value(found, "sluice_system_requests_total", system="crm-api", status="error") == 2
        assert value(found, "sluice_system_retries_total", system="crm-api", reason="truncated") == 1
        assert value(found, "sluice_system_retries_total", system="crm-api", reason="timeout") == 1
        assert value(found, "sluice_system_requests_total", system="crm-api", status="200") == total - 3
        assert value(found, "sluice_system_retries_total", system="crm-api", reason="503") == 1
        assert value(found, "sluice_system_request_duration_seconds_count", system="crm-api") == total
