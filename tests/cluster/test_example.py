"""``config/examples/cluster`` run as the README's "Cluster mode" recipe says: its survey API line
and its three ``sluice serve`` lines, with free ports and a fresh database of the temporary
PostgreSQL in place of 8107, 910N and the README's database."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime.store import PostgresStore
from tests.cluster.test_cluster import done_by
from tests.conftest import REPO, new_postgres_url
from tests.daemon.conftest import Api, Served
from tests.servers.postgres import _free_port
from tests.servers.survey_api import SurveyApi


def recipe() -> tuple[str, dict[str, str], list[str]]:
    """(survey API command, exported environment, ``sluice serve`` arguments) from the README."""
    block = (REPO / "README.md").read_text().split("<!-- cluster example -->\n```sh\n", 1)[1].split("```", 1)[0]
    server, export, serve = block.strip().splitlines()
    env = dict(item.split("=", 1) for item in shlex.split(export.removeprefix("export ")))
    m = re.fullmatch(r"for i in 1 2 3; do (sluice serve .*) & done", serve)
    assert m, serve
    return server.removesuffix(" &"), env, shlex.split(m[1])


async def test_the_cluster_example_runs_as_the_readme_says(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server_cmd, env, serve = recipe()
    assert serve[:3] == ["sluice", "serve", "config/examples/cluster"] and serve[3] == "--store"
    port = _free_port()
    args = shlex.split(server_cmd.replace("--port 8107", f"--port {port}"))
    api = subprocess.Popen([sys.executable, *args[1:]], cwd=REPO, stdout=subprocess.DEVNULL)
    url = await new_postgres_url(request)
    env["SURVEYS_URL"] = env["SURVEYS_URL"].replace("8107", str(port))
    members = []
    try:
        for i in (1, 2, 3):
            work = tmp_path / f"m{i}"
            work.mkdir()
            members.append(Served(REPO / serve[2], work / "data", work, env, ["--store", url]).start())
        async with aiohttp.ClientSession() as session:
            overview = await Api(members[0], session).get("/api/cluster")
        assert len(overview["members"]) == 3 and overview["leader"] in {m["member"] for m in overview["members"]}
        store = PostgresStore(url)
        await store.open()
        try:
            expected = sum(map(len, SurveyApi().responses.values()))
            deadline = time.monotonic() + 60
            while await ids(store, "survey-responses") < expected or \
                    (await store.unit_counts("survey-responses")).get("done", 0) < 30:
                assert time.monotonic() < deadline, "\n".join(m.log()[-2000:] for m in members)
                await anyio.sleep(0.2)
            assert await ids(store, "surveys") == len(SurveyApi().surveys)
        finally:
            await store.close()
        await anyio.sleep(float(env["SLUICE_CLUSTER_LEASE_S"]) / 3 + 1)  # the last shares end and log
        shares = [done_by(m, "survey-responses") for m in members]
        assert sum(shares) >= 30 and sum(s > 0 for s in shares) >= 2, shares
    finally:
        for m in members:
            await anyio.to_thread.run_sync(m.stop)
        api.terminate()
        api.wait()


async def ids(store: PostgresStore, dataset: str) -> int:
    info = await store.dataset_info(dataset)
    return 0 if info is None else info.ids
