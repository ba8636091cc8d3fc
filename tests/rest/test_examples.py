"""The REST examples in config/examples (Sesam's collect patterns and DIL's 2-step ingestion):
each validates (what `sluice check` does), and each runs as the README says: its server command
and its `sluice run` line (paired by the server's port), both as subprocesses (on a free port
instead of the README's), then the datasets are checked against the records the server was seeded
with (:func:`tests.servers.examples.seed`, the survey API's default generator)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime import Secrets, load_config
from runtime.plugins import default_registry
from tests.servers.examples import seed
from tests.servers.real import free_port
from tests.servers.survey_api import SurveyApi

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples"
SLUICE = str(Path(sys.executable).parent / "sluice")
ENV = {name: "http://127.0.0.1:9" for name in
       ("CRM_URL", "LEDGER_URL", "HR_URL", "SHOP_URL", "PRICES_URL", "CMS_URL", "SURVEYS_URL", "BULK_URL",
        "TARGET_URL")} | {
       "CRM_TOKEN": "t", "LEDGER_CLIENT_SECRET": "s", "HR_API_KEY": "k"}
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("rest-*"))
#: dataset -> (ids, of which deleted) after one run of the example, from the seeded records
EXPECTED = {
    "rest-delta-stream": {"ledger-events": (len(seed("rest-delta-stream")["changes"]),
                                            len(seed("rest-delta-stream")["changes"][::10]))},
    "rest-history": {"price-history": (len(seed("rest-history")["prices"]), 0),
                     "price-versions": (len(seed("rest-history")["prices"]), 0)},
    "rest-parameterized": {"shop-order-ids": (len(seed("rest-parameterized")["orders"]), 0),
                           "shop-order-lines": (len(seed("rest-parameterized")["orders"]), 0)},
    "rest-since-rescans": {"crm-customer-collect": (len(seed("rest-since-rescans")["customers"]), 0)},
    "rest-sporadic-empty": {"hr-employee-collect": (len(seed("rest-sporadic-empty")["employees"]), 0)},
    "rest-async-job": {"accounts": (2500, 0)},  # the bulk API started with --rows 2500
    "rest-raw-reshape": {"cms-article-raw": (len(seed("rest-raw-reshape")["articles"]), 0),
                         "cms-article": (len(seed("rest-raw-reshape")["articles"]), 0)},
    # the target API empty at start; the collect runs first (the insert pipe's restore guard hops
    # to it, so it waits for it), so one run collects nothing and the next collects the 8 inserted
    "rest-share-insert-update": {"people": (8, 0), "insert-responses": (8, 0), "target-records": (0, 0),
                                 "update-responses": (8, 0), "delete-responses": (0, 0)},
    # the target started with --records 8: 6 updated (If-Match), 1 deleted, 1 $replaced kept
    "rest-share-update-delete": {"contacts": (8, 0), "contact-records": (8, 0), "contact-update-responses": (6, 0),
                                 "contact-delete-responses": (1, 0)},
    "rest-share-capture": {"members": (8, 0), "inserted-members": (8, 0), "member-insert-responses": (8, 0),
                           "member-records": (8, 0)},
    "rest-share-merge": {"authors": (8, 0), "author-insert-responses": (8, 0), "author-records": (8, 0),
                         "author": (8, 0)},
    # o05, o13 fail the schema (dead-lettered at once); o09, o21 rejected by the target (retried later)
    "rest-share-egress": {"orders": (24, 0), "orders-responses": (24, 0), "orders-dead": (2, 0)},
    "rest-two-step": {"surveys": (len(SurveyApi().surveys), 0),
                      "survey-responses": (sum(map(len, SurveyApi().responses.values())), 0)},
}


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_example_validates(example: str) -> None:
    config = load_config(EXAMPLES / example, default_registry(), Secrets(environ=ENV))
    assert config.pipes and any(s.cls.__name__ == "RestSystem" for s in config.systems.values())


def test_there_is_one_example_per_collect_pattern_2_step_asynchronous_ingestion_and_share_pattern() -> None:
    assert len(EXAMPLE_NAMES) == 13


def test_the_examples_pipes_and_datasets_do_not_overlap() -> None:
    """The README runs every example in one data directory: no two may share a pipe or a dataset."""
    pipes: list[str] = []
    written: list[str] = []
    for example in EXAMPLE_NAMES:
        config = load_config(EXAMPLES / example, default_registry(), Secrets(environ=ENV))
        pipes += config.pipes
        written += [ds for p in config.pipes.values() for ds in p.writes]
    assert len(pipes) == len(set(pipes)) and len(written) == len(set(written))


def readme_lines() -> dict[str, tuple[str, str]]:
    """Example -> (server command, `sluice run` line) from the README's examples block: each
    server (``python -m tests.servers.MODULE [ARGS] --port N &``) with the run line whose URL
    has its port."""
    block = (REPO / "README.md").read_text().split("<!-- examples -->\n```sh\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    found = {}
    for line in lines:
        # a test server (a trailing comment may name the example), paired with the run line by port
        if m := re.fullmatch(r"python -m tests\.servers\.\w+ (?:\S+ )?--port (\d+)[^#&]* &(?:\s+#.*)?", line):
            run = next(r for r in lines if f"=http://127.0.0.1:{m[1]} " in r and " sluice run " in r)
            found[run.rsplit("/", 1)[1]] = (line.split("#", 1)[0].rstrip(), run)
    return found


def test_the_readme_has_a_server_and_a_run_line_per_example() -> None:
    found = readme_lines()
    assert sorted(found) == EXAMPLE_NAMES
    for example, (_, run) in found.items():
        assert run.endswith(f" sluice run config/examples/{example}")


def wait_answering(url: str, server: subprocess.Popen[bytes], timeout_s: float = 40.0) -> None:
    """Return once ``url`` answers HTTP (any status); fail if the server exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited with {server.returncode}"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(f"no answer from {url} within {timeout_s} s")


def counts(data_dir: Path) -> dict[str, tuple[int, int]]:
    """dataset -> (ids, deleted) from ``sluice datasets``."""
    shown = subprocess.run([SLUICE, "datasets", "--data-dir", str(data_dir)], capture_output=True, text=True,
                           check=True, env={**os.environ, "NO_COLOR": "1"}).stdout
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in shown.splitlines() if line.startswith("│")]
    return {c[0]: (int(c[2]), int(c[3])) for c in cells}


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_example_runs_as_the_readme_says(example: str, tmp_path: Path) -> None:
    serve_line, run_line = readme_lines()[example]
    readme_port = re.search(r"--port (\d+)", serve_line)[1]  # type: ignore[index]
    port = str(free_port())
    serve_cmd = shlex.split(serve_line.removesuffix(" &").replace(readme_port, port))
    words = shlex.split(run_line.replace(f":{readme_port}", f":{port}"))
    settings = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    run_cmd = [SLUICE if w == "sluice" else w for w in words if w not in {f"{k}={v}" for k, v in settings.items()}]
    assert serve_cmd[0] == "python" and run_cmd[:2] == [SLUICE, "run"]
    env = {**os.environ, **settings, "SLUICE_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    server = subprocess.Popen([sys.executable, *serve_cmd[1:]], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_answering(f"http://127.0.0.1:{port}/", server)
        done = subprocess.run(run_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.terminate()
        server.wait(15)
    assert done.returncode == 0, done.stderr[-3000:]
    assert counts(tmp_path / "data") == EXPECTED[example]
    check = CHECKS.get(example)
    if check is not None:
        check(lambda dataset: entities(dataset, env))


def entities(dataset: str, env: dict[str, str]) -> list[dict[str, Any]]:
    shown = subprocess.run([SLUICE, "entities", dataset, "--limit", "1000"], env=env, capture_output=True, text=True,
                           check=True).stdout
    return [orjson.loads(line) for line in shown.splitlines() if line.startswith("{")]


def _reshaped(read: Callable[[str], list[dict[str, Any]]]) -> None:
    assert read("cms-article")[0]["slug"] == "article-number-1"


def _origin_established(read: Callable[[str], list[dict[str, Any]]]) -> None:
    inserted = {e["_id"]: e for e in read("inserted-members")}
    assert {e["status"] for e in inserted.values()} == {201}  # the captured responses
    # each collected record links to the member it came from, through the captured response
    assert {e["$origin"]: e["_id"] for e in read("member-records")} == {
        k: e["response"]["id"] for k, e in inserted.items()}


def _merged_on_reference(read: Callable[[str], list[dict[str, Any]]]) -> None:
    merged = read("author")
    assert sorted(e["_id"] for e in merged) == [f"p0{i}" for i in range(1, 9)]
    assert all(len(e["$ids"]) == 2 and e["ref"] == e["_id"] for e in merged)  # the author and its record


def _validated(read: Callable[[str], list[dict[str, Any]]]) -> None:
    letters = {e["key"]: e for e in read("orders-dead")}
    assert sorted(letters) == ["o05", "o13"] and all("properties/amount/type" in e["error"] for e in letters.values())
    responses = {e["_id"]: e for e in read("orders-responses")}
    assert {k for k, e in responses.items() if e["state"] == "failed"} == {"o09", "o21"}
    assert responses["o09"]["response"]["errors"][0]["field"] == "name"


#: example -> a check of its datasets beyond their counts (given a reader of a dataset's entities)
CHECKS: dict[str, Callable[[Callable[[str], list[dict[str, Any]]]], None]] = {
    "rest-raw-reshape": _reshaped, "rest-share-capture": _origin_established,
    "rest-share-merge": _merged_on_reference, "rest-share-egress": _validated,
}
