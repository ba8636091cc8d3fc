"""Prometheus metrics the runtime and connectors record (instrumentation; no daemon import).

Everything lives in one :class:`prometheus_client.CollectorRegistry` (:data:`REGISTRY`), not the
client library's global one, so embedding Sluice never collides with the host's metrics. The
daemon's ``GET /metrics`` (:mod:`runtime.daemon.scrape`, the exposition) reads it in Prometheus
text format: prometheus-client's own split between instrumentation and exposition.

System actors (REST and other HTTP connectors) record their requests with::

    from runtime.metrics import observe_request, count_retry
    observe_request("my-api", 200, 0.042)   # system _id, HTTP status (or "error"), seconds
    count_retry("my-api", "429")            # system _id, why it retried

Both are cheap (no I/O) and safe to call when no daemon runs (the values are simply kept).
This module imports nothing of the daemon (only the store protocol's vocabulary), so connectors
and the data path may import it.

Metric names (labels in braces):

==========================================  =====================================================
``sluice_pipe_runs_total{pipe,status}``      finished runs by status (completed/failed/stopped)
``sluice_pipe_failures_total{pipe}``         failed runs
``sluice_pipe_entities_read_total{pipe}``    entities read from the source
``sluice_pipe_entities_written_total{pipe}`` versions written (new + changed)
``sluice_pipe_entities_deleted_total{pipe}`` deletion versions written
``sluice_pipe_run_duration_seconds{pipe}``   histogram of run wall time
``sluice_pipe_last_success_timestamp_seconds{pipe}``  Unix time of the last completed run
``sluice_pipe_since_lag{pipe}``              committed input offsets not yet read (dataset
                                             sources; refreshed at each scrape)
``sluice_pipe_running{pipe}``                1 while a run is in progress
``sluice_system_requests_total{system,status}``  requests a system made, by HTTP status
``sluice_system_retries_total{system,reason}``   retries a system made
``sluice_system_request_duration_seconds{system}``  histogram of request latency
``sluice_receiver_entities_total{pipe}``     entities received by JSON push
``sluice_publisher_entities_total{pipe}``    entities served by JSON pull
``sluice_work_units{pipe,status}``           work units of a pipe by ledger status (DIL; set
                                             from the store by :func:`set_unit_counts`)
==========================================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.store.protocol import UNIT_STATUSES

REGISTRY = CollectorRegistry(auto_describe=True)

_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
_REQ_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RUNS = Counter("sluice_pipe_runs", "Finished pipe runs by status.", ["pipe", "status"], registry=REGISTRY)
FAILURES = Counter("sluice_pipe_failures", "Failed pipe runs.", ["pipe"], registry=REGISTRY)
READ = Counter("sluice_pipe_entities_read", "Entities read from the source.", ["pipe"], registry=REGISTRY)
WRITTEN = Counter(
    "sluice_pipe_entities_written", "Versions written (new + changed).", ["pipe"], registry=REGISTRY
)
DELETED = Counter("sluice_pipe_entities_deleted", "Deletion versions written.", ["pipe"], registry=REGISTRY)
DURATION = Histogram(
    "sluice_pipe_run_duration_seconds", "Pipe run wall time.", ["pipe"], buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "sluice_pipe_last_success_timestamp_seconds", "Unix time of the last completed run.", ["pipe"],
    registry=REGISTRY,
)
SINCE_LAG = Gauge(
    "sluice_pipe_since_lag", "Committed input offsets the pipe has not read yet.", ["pipe"],
    registry=REGISTRY,
)
RUNNING = Gauge("sluice_pipe_running", "1 while the pipe runs.", ["pipe"], registry=REGISTRY)
REQUESTS = Counter(
    "sluice_system_requests", "Requests made by a system, by HTTP status.", ["system", "status"],
    registry=REGISTRY,
)
RETRIES = Counter("sluice_system_retries", "Retries made by a system.", ["system", "reason"], registry=REGISTRY)
LATENCY = Histogram(
    "sluice_system_request_duration_seconds", "Request latency of a system.", ["system"],
    buckets=_REQ_BUCKETS, registry=REGISTRY,
)
RECEIVED = Counter("sluice_receiver_entities", "Entities received by JSON push.", ["pipe"], registry=REGISTRY)
PUBLISHED = Counter("sluice_publisher_entities", "Entities served by JSON pull.", ["pipe"], registry=REGISTRY)
WORK_UNITS = Gauge("sluice_work_units", "Work units of a pipe by status.", ["pipe", "status"], registry=REGISTRY)


def observe_request(system: str, status: int | str, seconds: float) -> None:
    """Record one request a system made.

    Args:
        system: the system ``_id``.
        status: the HTTP status code, or a word such as ``"error"`` when no response came.
        seconds: wall time of the request.
    """
    REQUESTS.labels(system, str(status)).inc()
    LATENCY.labels(system).observe(max(seconds, 0.0))


def count_retry(system: str, reason: str = "") -> None:
    """Record one retry by a system (``reason``: e.g. the status code or ``"timeout"``)."""
    RETRIES.labels(system, reason).inc()


def observe_run(summary: dict[str, Any], *, finished_at: float) -> None:
    """Record a finished pipe run from its :meth:`RunResult.summary` (``finished_at``: Unix time)."""
    pipe = summary["pipe"]
    status = summary["status"]
    RUNS.labels(pipe, status).inc()
    if status == "failed":
        FAILURES.labels(pipe).inc()
    READ.labels(pipe).inc(summary.get("read", 0))
    WRITTEN.labels(pipe).inc(summary.get("new", 0) + summary.get("changed", 0))
    DELETED.labels(pipe).inc(summary.get("deleted", 0))
    DURATION.labels(pipe).observe(summary.get("seconds", 0.0))
    if status == "completed":
        LAST_SUCCESS.labels(pipe).set(finished_at)


def touch_pipe(pipe: str) -> None:
    """Create a pipe's series at zero so they show before its first run."""
    for metric in (FAILURES, READ, WRITTEN, DELETED):
        metric.labels(pipe)
    RUNNING.labels(pipe).set(0)


def set_unit_counts(pipe: str, counts: Mapping[str, int]) -> None:
    """Set ``sluice_work_units{pipe,status}`` from a pipe's unit counts by status (as
    :meth:`StateStore.unit_counts` returns them); a status missing from ``counts`` is set to 0,
    so a status a pipe's units have left does not keep its old value."""
    for status in UNIT_STATUSES:
        WORK_UNITS.labels(pipe, status).set(counts.get(status, 0))
