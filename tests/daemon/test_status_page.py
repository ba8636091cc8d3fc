"""The status pages of a real ``sluice serve``: the page with its flow graph loaded in headless
Debian Chromium (installed by scripts/setup.d/30-daemon.sh, with Graphviz's dot), screenshots
taken and the rendered DOM checked; the execution-log and dataset pages over HTTP."""

from __future__ import annotations

import re
import shutil
from html import unescape
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from runtime import Secrets, load_config
from runtime.daemon.status_graph import STATE_COLOURS, flow_graph, render_svg
from runtime.plugins import default_registry
from tests.daemon.conftest import READ, Api, counter_pipe

CHROMIUM = Path("/usr/bin/chromium")
DEMO = Path(__file__).parents[2] / "config" / "demo"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900"]


async def chromium(tmp: Path, *args: str) -> str:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run scripts/setup.d/30-daemon.sh (apt-get install chromium)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    with anyio.fail_after(90):
        done = await anyio.run_process(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode(errors="replace")


async def screenshot(tmp: Path, url: str, name: str) -> None:
    shot = tmp / name
    await chromium(tmp, f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


async def test_status_page_in_headless_chromium(start_daemon: Any, session: Any, tmp_path: Path) -> None:
    served = start_daemon([
        counter_pipe("orders", 12, mode="manual"),
        counter_pipe("broken-feed", 3, mode="manual", source={"fail_while_exists": "pipes.yaml"}),
        counter_pipe("idle-pipe", 3, mode="manual"),
        {"_id": "parked", "type": "pipe", "source": {"type": "embedded", "entities": []}, "pump": {"mode": "off"}},
    ])
    api = Api(served, session)
    for pipe in ("orders", "broken-feed"):
        await api.post(f"/api/pipes/{pipe}/pump", json={"operation": "start"})
    await api.until(lambda: _all_ran(api, ["orders", "broken-feed"]), "both pipes to run")
    await api.post("/api/pipes/idle-pipe/pump", json={"operation": "disable"})

    url = f"{served.url}/?token={READ}"
    await screenshot(tmp_path, url, "status.png")
    dom = await chromium(tmp_path, "--dump-dom", url)
    states = dict(re.findall(r'<tr id="pipe-([^"]+)">.*?<span class="state [^"]+">([^<]+)</span>', dom, re.DOTALL))
    assert states == {"orders": "ok", "broken-feed": "failed", "idle-pipe": "disabled", "parked": "off"}
    assert _fills(dom) == {pipe: STATE_COLOURS[state] for pipe, state in states.items()}  # the graph's too
    assert "pipes.yaml exists; failing on purpose" in dom  # the failed run's error is shown
    assert f'href="/status/pipes/orders/log?token={READ}"' in dom
    assert f'href="/status/datasets/orders?token={READ}"' in dom
    assert 'http-equiv="refresh"' in dom
    for link in (f"/status/pipes/orders/log?token={READ}", f"/status/datasets/orders?token={READ}"):
        async with session.get(served.url + link) as r:  # the page's links work from a browser
            assert (r.status, r.content_type) == (200, "text/html")


async def test_graph_of_the_demo_names_everything_and_colours_a_failed_pipe(
    start_daemon: Any, session: Any, tmp_path: Path,
) -> None:
    broken = {"_id": "broken-import", "type": "pipe", "pump": {"mode": "manual"},
              "source": {"type": "file", "path": "data/broken.json"}}
    served = start_daemon([broken], start=False)
    shutil.copytree(DEMO, served.config_dir, dirs_exist_ok=True)
    (served.config_dir / "data" / "broken.json").write_text('[{"_id": "a"}, {"_id": "b", "name": "trunc')
    demo = [yaml.safe_load(p.read_text()) for p in sorted((DEMO / "pipes").glob("*.yaml"))]
    for pipe in demo:  # run only when told to, so that no run is under way when the page is read
        pipe["pump"] = {"mode": "manual"}
        (served.config_dir / "pipes" / f"{pipe['_id']}.yaml").write_text(yaml.safe_dump(pipe))
    served.start()
    pipes = [p["_id"] for p in demo]
    datasets = {p["sink"]["dataset"] for p in demo} | {p["source"]["dataset"] for p in demo if "dataset" in p["source"]}
    api = Api(served, session)
    for batch in ([p["_id"] for p in demo if p["source"]["type"] != "dataset"],
                  [p["_id"] for p in demo if p["source"]["type"] == "dataset"], ["broken-import"]):
        for pipe in batch:
            await api.post(f"/api/pipes/{pipe}/pump", json={"operation": "start"})
        await api.until(lambda batch=batch: _all_ran(api, batch), f"{batch} to run", timeout=100)

    url = f"{served.url}/?token={READ}"
    await screenshot(tmp_path, url, "demo.png")
    dom = await chromium(tmp_path, "--dump-dom", url)
    svg = dom[dom.index('<div id="graph">'):dom.index("</svg>")]
    texts = {unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}
    assert set(pipes) | datasets | {"broken-import"} <= texts
    for name in datasets | {"broken-import"}:
        assert f'id="graph-dataset-{name}"' in svg
    assert _fills(svg) == {**dict.fromkeys(pipes, STATE_COLOURS["ok"]), "broken-import": STATE_COLOURS["failed"]}
    assert re.search(r'class="node pipe failed".*?last run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', svg, re.DOTALL)
    assert f'href="/status/pipes/broken-import/log?token={READ}"' in svg  # nodes link to their pages
    await screenshot(tmp_path, f"{served.url}/status/pipes/broken-import/log?token={READ}", "log.png")
    await screenshot(tmp_path, f"{served.url}/status/datasets/iso-countries?limit=5&token={READ}", "dataset.png")


async def test_graph_draws_systems_and_what_reads_and_writes_what() -> None:
    config = load_config(DEMO.parent / "examples" / "rest-parameterized", default_registry(),
                         Secrets(environ={"SHOP_URL": "http://127.0.0.1:9"}))
    views = {"shop-order-ids": {"state": "ok", "last_run": {"started_us": 1_796_000_000_000_000}},
             "shop-order-lines": {"state": "never-run", "last_run": None}}
    datasets = dict.fromkeys(["shop-order-ids", "shop-order-lines", '<b>&"x\\N</b>'])
    graph = flow_graph(list(config.pipes.values()), views, datasets, lambda path: path)
    nodes = dict(re.findall(r'^\t(n\d+) \[.*\bid="graph-([^"]+)"', graph.source, re.M))
    edges = {(nodes[a], nodes[b], attrs) for a, b, attrs in
             re.findall(r"^\t(n\d+) -> (n\d+)(?: \[(.*)\])?$", graph.source, re.M)}
    assert edges == {
        ("system-shop", "pipe-shop-order-ids", ""),  # the rest source calls the system
        ("pipe-shop-order-ids", "dataset-shop-order-ids", ""),
        ("dataset-shop-order-ids", "pipe-shop-order-lines", "style=solid"),  # a dataset source
        ("pipe-shop-order-lines", "system-shop", "dir=both style=dashed"),  # the rest transform
        ("pipe-shop-order-lines", "dataset-shop-order-lines", ""),
    }
    svg = await render_svg(graph)
    assert svg is not None and svg.startswith("<svg") and 'id="graph&#45;system&#45;shop"' in svg
    assert "last run 2026&#45;11&#45;30 00:53:20 UTC" in svg and 'class="node pipe never&#45;run"' in svg
    assert "<b>" not in svg and 'id="graph&#45;dataset&#45;&lt;b&gt;&amp;&quot;x\\N&lt;/b&gt;"' in svg
    assert ">&lt;b&gt;&amp;&quot;x\\N&lt;/b&gt;</text>" in svg  # names are drawn as they are, escaped


async def test_graph_needs_dot_and_says_so(start_daemon: Any, session: Any, tmp_path: Path) -> None:
    empty = tmp_path / "no-programs"
    empty.mkdir()
    served = start_daemon([counter_pipe("orders", 2, mode="manual")], env={"PATH": str(empty)})
    page = await Api(served, session).get("/")
    assert "The flow graph needs Graphviz's <code>dot</code> program" in page
    assert '<tr id="pipe-orders">' in page  # the tables are still there


async def test_execution_log_page_is_newest_first_and_paged(start_daemon: Any, session: Any) -> None:
    served = start_daemon([counter_pipe("orders", 3, mode="manual")])
    api = Api(served, session)
    for n in range(1, 4):
        await api.post("/api/pipes/orders/pump", json={"operation": "start"})
        await api.until(lambda n=n: _ran(api, "orders", n), f"run {n}")
    everything = [e["seq"] for e in await api.get("/api/pipes/orders/log?limit=1000")]
    assert len(everything) >= 6  # a started and a completed event per run

    seen: list[int] = []
    path = f"/status/pipes/orders/log?limit=4&token={READ}"
    while path:
        page = await api.get(path, token=None)
        seqs = [int(s) for s in re.findall(r'<tr id="event-(\d+)">', page)]
        assert 0 < len(seqs) <= 4 and seqs == sorted(seqs, reverse=True)
        seen += seqs
        older = re.search(r'<a rel="next" href="([^"]+)">older</a>', page)
        path = unescape(older.group(1)) if older else ""
    assert seen == everything[::-1]
    first = await api.get(f"/status/pipes/orders/log?limit=4&token={READ}", token=None)
    assert "run-completed" in first and f'before={everything[-4]}' in first
    await api.get("/status/pipes/nope/log", expect=404)
    await api.get("/status/pipes/orders/log?before=x", expect=400)


async def test_dataset_page_is_paged_and_escapes_entities(start_daemon: Any, session: Any) -> None:
    entities = [{"_id": f"e{i}", "n": i} for i in range(6)]
    entities.append({"_id": "<b>x</b>", "note": "<script>alert(1)</script> & co"})
    served = start_daemon([{"_id": "things", "type": "pipe", "pump": {"mode": "manual"},
                            "source": {"type": "embedded", "entities": entities}}],
                          env={"SLUICE_PUBLIC_STATUS_PAGE": "true"})
    api = Api(served, session)
    await api.post("/api/pipes/things/pump", json={"operation": "start"})
    await api.until(lambda: _ran(api, "things", 1), "the run")

    ids: list[str] = []
    pages = []
    path = f"/status/datasets/things?limit=3&token={READ}"
    while path:
        page = await api.get(path, token=None)
        pages.append(page)
        ids += [unescape(i) for i in re.findall(r'<tr class="entity[^"]*"><td>([^<]*)', page)]
        more = re.search(r'<a rel="next" href="([^"]+)">next page</a>', page)
        path = unescape(more.group(1)) if more else ""
    assert [len(re.findall('<tr class="entity', p)) for p in pages] == [3, 3, 1]
    assert ids == [e["_id"] for e in entities]
    last = pages[-1]
    assert "<script>" not in last and "<b>x</b>" not in last
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in last and "&lt;b&gt;x&lt;/b&gt;" in last

    await api.get("/status/datasets/nope", expect=404)
    await api.get("/", token=None)  # public_status_page opens / only:
    await api.get("/status/datasets/things", token=None, expect=401)
    await api.get("/status/pipes/things/log", token=None, expect=401)


def _fills(dom: str) -> dict[str, str]:
    """Pipe ``_id`` -> the fill colour of its node in the graph's SVG."""
    return dict(re.findall(r'<g id="graph-pipe-([^"]+)" class="node pipe [^"]+">.*?<path fill="([^"]+)"', dom,
                           re.DOTALL))


async def _ran(api: Api, pipe: str, runs: int) -> bool:
    p = await api.pipe(pipe)
    return p["runs"] >= runs and not p["running"]


async def _all_ran(api: Api, pipes: list[str]) -> bool:
    for pipe in pipes:
        if not await _ran(api, pipe, 1):
            return False
    return True
