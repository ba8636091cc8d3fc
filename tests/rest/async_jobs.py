"""Config helpers of the asynchronous-ingestion tests: a ``rest`` source with a ``job`` against our
Salesforce Bulk 2.0 style API (:mod:`tests.servers.bulk_api`)."""

from __future__ import annotations

from typing import Any

from tests.rest.conftest import system


def job(**status: Any) -> dict[str, Any]:
    """The ``job`` block for the bulk API: create, poll (fast), CSV results by ``Sforce-Locator``,
    DELETE as cleanup; ``status`` overrides keys of the status step."""
    return {
        "start": {"url": "/jobs", "payload": {"query": "SELECT Id FROM Account", "object": "Account"},
                  "id_expression": "{{ response.id }}"},
        "status": {"url": "/jobs/{{ job }}", "ready_expression": "{{ response.state == 'JobComplete' }}",
                   "failed_expression": "{{ response.state in ['Failed', 'Aborted'] }}",
                   "state_expression": "{{ response.state }}", "poll_interval_s": 0.01,
                   "poll_backoff": 1.0, "max_wait_in_run_s": 30, **status},
        "results": {"url": "/jobs/{{ job }}/results", "format": "csv", "locator_header": "Sforce-Locator"},
        "cleanup": {"url": "/jobs/{{ job }}"},
    }


def job_config(url: str, *, batch_size: int = 1000, work_units: dict[str, Any] | None = None,
               **status: Any) -> list[dict[str, Any]]:
    """System ``api`` and pipe ``accounts`` (dataset ``accounts``) reading one job."""
    source: dict[str, Any] = {"type": "rest", "system": "api", "id_expression": "{{ Id }}", "job": job(**status)}
    if work_units is not None:
        source["work_units"] = work_units
    return [system(url), {"_id": "accounts", "type": "pipe", "source": source, "batch_size": batch_size}]
