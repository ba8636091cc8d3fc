"""The example plugin (tests/plugin_example, installed into .venv by scripts/setup.d/30-daemon.sh)
adds a source, a transform and a sink through the ``sluice.components`` entry point; a config
uses all three in a running daemon."""

from __future__ import annotations

import json
from typing import Any

from runtime.plugins import default_registry
from tests.daemon.conftest import Api


def test_plugin_is_registered_by_entry_point() -> None:
    registry = default_registry()
    assert "example" in registry.plugins
    assert registry.get("source", "example_counter") is not None
    assert registry.get("transform", "example_stamp") is not None
    assert registry.get("sink", "example_jsonl") is not None


async def test_plugin_components_in_a_daemon(start_daemon: Any, session: Any) -> None:
    served = start_daemon([{
        "_id": "plugged", "type": "pipe",
        "source": {"type": "example_counter", "count": 7, "chunk_size": 3},
        "transform": {"type": "example_stamp", "field": "via", "value": "plugin"},
        "sink": {"type": "example_jsonl", "path": "out/plugged.jsonl"},
        "pump": {"mode": "manual"},
    }])
    api = Api(served, session)
    await api.post("/api/pipes/plugged/pump", json={"operation": "start"})
    await api.until(lambda: _completed(api), "the plugin pipe to run")
    lines = (served.config_dir / "out" / "plugged.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["_id"] for r in rows] == [f"n{i}" for i in range(1, 8)]
    assert {r["via"] for r in rows} == {"plugin"}
    assert (await api.pipe("plugged"))["since"] == 7


async def _completed(api: Api) -> bool:
    p = await api.pipe("plugged")
    return (p["last_run"] or {}).get("status") == "completed"
