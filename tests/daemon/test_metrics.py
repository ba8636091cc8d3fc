"""``/metrics`` scraped from a real daemon and parsed with prometheus-client's parser; the
system metrics API used in-process (no HTTP system runs in this test's config); the layout rule
that the data path records metrics without importing the daemon (issue 9 item 6)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics
from runtime.daemon.scrape import exposition
from tests.daemon.conftest import Api, counter_pipe


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_pipe_metrics(start_daemon: Any, session: Any) -> None:
    served = start_daemon([
        counter_pipe("numbers", 25, mode="manual"),
        counter_pipe("broken", 5, mode="manual", source={"fail_while_exists": "pipes.yaml"}),
        {"_id": "copy", "type": "pipe", "source": {"type": "dataset", "dataset": "numbers"},
         "pump": {"mode": "manual"}},
        {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"}},
    ])
    api = Api(served, session)
    before = samples(await api.get("/metrics"))
    assert value(before, "sluice_pipe_failures_total", pipe="numbers") == 0
    assert value(before, "sluice_pipe_running", pipe="numbers") == 0

    for pipe in ("numbers", "broken"):
        await api.post(f"/api/pipes/{pipe}/pump", json={"operation": "start"})
    await api.until(lambda: _ran(api, "numbers"), "numbers to run")
    await api.until(lambda: _ran(api, "broken"), "broken to fail")
    await api.post("/api/receivers/inbox/entities", json=[{"_id": "a"}, {"_id": "b"}])

    found = samples(await api.get("/metrics"))
    assert value(found, "sluice_pipe_runs_total", pipe="numbers", status="completed") == 1
    assert value(found, "sluice_pipe_runs_total", pipe="broken", status="failed") == 1
    assert value(found, "sluice_pipe_failures_total", pipe="broken") == 1
    assert value(found, "sluice_pipe_entities_read_total", pipe="numbers") == 25
    assert value(found, "sluice_pipe_entities_written_total", pipe="numbers") == 25
    assert value(found, "sluice_pipe_entities_deleted_total", pipe="numbers") == 0
    assert value(found, "sluice_pipe_run_duration_seconds_count", pipe="numbers") == 1
    assert value(found, "sluice_pipe_run_duration_seconds_bucket", pipe="numbers", le="+Inf") == 1
    assert value(found, "sluice_pipe_last_success_timestamp_seconds", pipe="numbers") > 1.7e9
    assert ("sluice_pipe_last_success_timestamp_seconds", (("pipe", "broken"),)) not in found
    assert value(found, "sluice_pipe_since_lag", pipe="copy") == 25  # copy has not run yet
    assert value(found, "sluice_receiver_entities_total", pipe="inbox") == 2
    assert value(found, "sluice_pipe_entities_written_total", pipe="inbox") == 2

    await api.post("/api/pipes/copy/pump", json={"operation": "start"})
    await api.until(lambda: _ran(api, "copy"), "copy to run")
    assert value(samples(await api.get("/metrics")), "sluice_pipe_since_lag", pipe="copy") == 0


def test_system_metrics_api() -> None:
    metrics.observe_request("crm", 200, 0.02)
    metrics.observe_request("crm", 200, 0.2)
    metrics.observe_request("crm", 503, 1.5)
    metrics.count_retry("crm", "503")
    found = samples(exposition().decode())
    assert value(found, "sluice_system_requests_total", system="crm", status="200") == 2
    assert value(found, "sluice_system_requests_total", system="crm", status="503") == 1
    assert value(found, "sluice_system_retries_total", system="crm", reason="503") == 1
    assert value(found, "sluice_system_request_duration_seconds_count", system="crm") == 3
    assert value(found, "sluice_system_request_duration_seconds_bucket", system="crm", le="0.25") == 2


async def _ran(api: Api, pipe: str) -> bool:
    p = await api.pipe(pipe)
    return p["runs"] >= 1 and not p["running"]


def test_sluice_drops_created_series_from_its_own_exposition_only() -> None:
    from prometheus_client import REGISTRY as HOST_REGISTRY
    from prometheus_client import Counter, generate_latest

    host = Counter("host_app_jobs", "a counter of the program embedding Sluice")  # the global registry
    try:
        host.inc()
        metrics.RUNS.labels("p", "completed").inc()
        assert b"host_app_jobs_created" in generate_latest(HOST_REGISTRY)
        exposed = exposition()
        assert b"sluice_pipe_runs_total" in exposed and b"_created" not in exposed
    finally:
        HOST_REGISTRY.unregister(host)


ROOT = Path(__file__).parents[2]
ABOVE_THE_DATA_PATH = ("runtime/daemon/", "runtime/cli/", "runtime/runtime.py")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return found


def test_the_data_path_imports_nothing_of_the_daemon() -> None:
    """Connectors and the runtime below the daemon record metrics through runtime.metrics
    (instrumentation); only the daemon's /metrics (exposition) and the layers above it import
    runtime.daemon."""
    files = [*ROOT.glob("connectors/**/*.py"), *ROOT.glob("runtime/**/*.py")]
    offenders = {
        str(f.relative_to(ROOT)): sorted(m for m in _imports(f) if m.split(".")[:2] == ["runtime", "daemon"])
        for f in files if not str(f.relative_to(ROOT)).startswith(ABOVE_THE_DATA_PATH)
    }
    assert len(files) > 40
    assert {f: m for f, m in offenders.items() if m} == {}
