"""Every REST collect-pattern example in config/examples validates (what `sluice check` does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import Secrets, load_config
from runtime.plugins import default_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
ENV = {name: "http://127.0.0.1:9" for name in
       ("CRM_URL", "LEDGER_URL", "HR_URL", "SHOP_URL", "PRICES_URL", "CMS_URL")} | {
       "CRM_TOKEN": "t", "LEDGER_CLIENT_SECRET": "s", "HR_API_KEY": "k"}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("rest-*")))
def test_example_validates(example: str) -> None:
    config = load_config(EXAMPLES / example, default_registry(), Secrets(environ=ENV))
    assert config.pipes and any(s.cls.__name__ == "RestSystem" for s in config.systems.values())


def test_there_is_one_example_per_collect_pattern() -> None:
    assert len(list(EXAMPLES.glob("rest-*"))) == 6
