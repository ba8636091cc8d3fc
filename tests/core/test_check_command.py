"""`sluice check` refuses what `sluice run` would refuse, and more that is almost always a typo:
an input dataset no pipe writes; dependency cycles are warnings. Secrets files never leak."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from runtime.cli.main import cli
from tests.conftest import REPO
from tests.core.helpers import dataset_pipe

EMBEDDED = {"type": "embedded", "entities": [{"_id": "a"}]}


def sluice(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write(root: Path, objects: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipes.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))
    return root


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(REPO / "config" / "demo", root)
    return root


def test_the_demo_checks_ok(demo: Path) -> None:
    result = sluice("check", demo)
    assert result.exit_code == 0, result.output
    assert "ok: 4 pipes" in result.stdout and "warning" not in result.output


def test_a_dataset_no_pipe_writes_is_named_with_the_closest_one(demo: Path) -> None:
    enriched = demo / "pipes" / "subdivisions-enriched.yaml"
    enriched.write_text(enriched.read_text().replace("dataset: iso-subdivisions", "dataset: iso-subdivision"))
    result = sluice("check", demo)
    assert result.exit_code == 2
    assert (
        "subdivisions-enriched.yaml: subdivisions-enriched: source.dataset: no pipe of the config writes "
        "dataset 'iso-subdivision'; did you mean 'iso-subdivisions'?"
    ) in result.stderr


def test_receivers_and_dead_letter_datasets_count_as_written(tmp_path: Path) -> None:
    root = write(tmp_path / "cfg", [
        {"_id": "inbox", "type": "pipe", "source": {"type": "http_endpoint"}},
        dataset_pipe("copy", "inbox", pump={"dead_letter_dataset": "copy-letters"}),
        dataset_pipe("letters", "copy-letters"),
    ])
    result = sluice("check", root)
    assert result.exit_code == 0, result.output


def test_every_problem_of_every_pipe_at_once(tmp_path: Path) -> None:
    root = write(tmp_path / "cfg", [
        {"_id": "orders", "type": "pipe", "source": {"type": "rset"}, "pump": {"cron_expression": "daily"}},
        dataset_pipe("copy", "order"),
        {"_id": "plain", "type": "pipe", "source": {**EMBEDDED, "entities": [{"_id": "a", "k": "$SECRET(k)"}]}},
    ])
    result = CliRunner(env={"k": "v"}).invoke(cli, ["check", str(root)])
    assert result.exit_code == 2
    assert "invalid configuration (4 problems)" in result.stderr
    for line in ("orders: source.type: unknown source type 'rset'",
                 "orders: pump.cron_expression: Value error, not a valid cron expression: 'daily'",
                 "copy: source.dataset: no pipe of the config writes dataset 'order'; did you mean 'orders'?",
                 "plain: source.entities[0].k: $SECRET(...) is not allowed here"):
        assert line in result.stderr, result.stderr


def test_a_dependency_cycle_is_a_warning_naming_it(tmp_path: Path) -> None:
    root = write(tmp_path / "cfg", [
        {"_id": "start", "type": "pipe", "source": EMBEDDED},
        dataset_pipe("a", "b"),
        dataset_pipe("b", "a"),
    ])
    warning = "pipes.yaml: a: dependency cycle a -> b -> a: these pipes read each other's datasets"
    checked = sluice("check", root)
    assert checked.exit_code == 0, checked.output
    assert checked.stderr.startswith("warning: ") and warning in checked.stderr
    ran = sluice("run", root, "--pipe", "start", "--data-dir", tmp_path / "data")
    assert ran.exit_code == 0, ran.output
    assert "config.warning" in ran.stderr and "dependency cycle a -> b -> a" in ran.stderr


@pytest.mark.parametrize(("name", "content", "position"), [
    ("secrets.yaml", b'api: "hunter2-value\nother: x\n', "line 3, column 1 (scanning from line 1, column 6)"),
    ("secrets.json", b'{"api": "hunter2-value', "line 1, column 23"),
    ("latin.yaml", b"api: hunter2-\xe9t\xe9\n", "not UTF-8 text at byte 13"),
])
def test_a_malformed_secrets_file_shows_positions_only(
    tmp_path: Path, name: str, content: bytes, position: str
) -> None:
    root = write(tmp_path / "cfg", [{"_id": "p", "type": "pipe", "source": EMBEDDED}])
    secrets = tmp_path / name
    secrets.write_bytes(content)
    result = sluice("check", root, "--secrets-file", secrets)
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert f"secrets file {secrets}: not valid" in result.stderr and position in result.stderr, result.stderr


def test_dead_letters_into_a_dataset_a_pipe_writes_are_refused_by_check_and_run(tmp_path: Path) -> None:
    root = write(tmp_path / "cfg", [
        {"_id": "orders", "type": "pipe", "source": EMBEDDED, "pump": {"dead_letter_dataset": "orders"}},
    ])
    reason = ("orders: pump.dead_letter_dataset: dataset 'orders' is written by pipe 'orders'; "
              "dead letters need a dataset of their own, e.g. 'orders-dead-letters'")
    for args in (["check", root], ["run", root, "--data-dir", tmp_path / "data"]):
        result = sluice(*args)
        assert result.exit_code == 2 and reason in result.stderr, (args, result.output)
    assert not (tmp_path / "data" / "sluice.db").exists()
