"""The share patterns' pipes (seeds 001/002, sesam.md §8) as the example
``config/examples/rest-share-insert-update`` writes them: the insert, collect, update and delete
pipes around the local dataset ``people``, so the tests run exactly what the example shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "rest-share-insert-update" / "config.yaml"


def share_pipes() -> list[dict[str, Any]]:
    """The example's insert, target-records (collect), update and delete pipes (its system and
    its ``people`` pipe left out: the tests give their own)."""
    objects = yaml.safe_load(EXAMPLE.read_text())
    return [o for o in objects if o["type"] == "pipe" and o["_id"] != "people"]
