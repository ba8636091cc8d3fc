"""An example Sluice plugin: two sources (one with work units), one transform, one sink,
registered by entry point.

``pyproject.toml`` declares ``[project.entry-points."sluice.components"] example =
"sluice_plugin_example:register"``; Sluice calls :func:`register` with its registry at startup.
"""

from __future__ import annotations

from runtime.plugins import Registry
from sluice_plugin_example.components import CounterSource, JsonLinesSink, StampTransform
from sluice_plugin_example.jobs import JobsSource


def register(registry: Registry) -> None:
    """Add this plugin's component types to Sluice's registry."""
    registry.register("source", "example_counter", CounterSource)
    registry.register("transform", "example_stamp", StampTransform)
    registry.register("sink", "example_jsonl", JsonLinesSink)
    registry.register("source", "example_jobs", JobsSource)
