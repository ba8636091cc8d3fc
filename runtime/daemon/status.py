"""``GET /``: a small status page, server-rendered HTML that refreshes itself every 5 seconds.

No JavaScript and no build step: one table of pipes (state, last run, counts, error, next run)
with links to each pipe's execution log and dataset, and one of datasets. When the page is
opened with ``?token=``, the links carry the token so they work from a browser.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from runtime.daemon.api_data import dataset_view
from runtime.daemon.api_pipes import pipe_views
from runtime.daemon.app import daemon_of
from runtime.pump.schedule import iso

REFRESH_S = 5
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:20px;margin:0 0 .2em} h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top} th{background:#f3f3f3} td.n{text-align:right}
.state{font-weight:600;padding:1px 6px;border-radius:3px}
.ok{background:#d8f0d8}.running{background:#d8e6f8}.failed,.tripped{background:#f8d8d8}
.disabled,.off,.never-run{background:#eee}.err{color:#a00;max-width:30em;overflow-wrap:anywhere}
.meta{color:#666}
"""


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", status_page)


def _link(path: str, token: str | None, **query: Any) -> str:
    args = {k: v for k, v in query.items() if v is not None}
    if token:
        args["token"] = token
    return escape(path + ("?" + urlencode(args) if args else ""))


def _pipe_row(p: dict[str, Any], token: str | None) -> str:
    last = p["last_run"] or {}
    live = p["live"] or last
    counts = [live.get(k, "") for k in ("read", "new", "changed", "deleted")]
    error = last.get("error") or p["pump"]["last_error"] or ""
    pid = quote(p["_id"])
    links = [f'<a href="{_link(f"/api/pipes/{pid}/log", token, limit=50)}">log</a>']
    links += [f'<a href="{_link(f"/api/datasets/{quote(ds)}/entities", token, limit=50)}">{escape(ds)}</a>'
              for ds in p["writes"]]
    cells = [
        f'<td class="pipe">{escape(p["_id"])}<div class="meta">{escape(p["kind"])}, '
        f'{escape(p["source"])} &rarr; {escape(p["sink"])}</div></td>',
        f'<td><span class="state {escape(p["state"])}">{escape(p["state"])}</span></td>',
        f'<td>{escape(str(last.get("status", "")))} {escape(str(last.get("kind", "")))}'
        f'<div class="meta">{escape(str(last.get("seconds", "")))}{" s" if last else ""}</div></td>',
        *[f'<td class="n">{escape(str(c))}</td>' for c in counts],
        f'<td>{escape(p["pump"]["next_run"] or "")}</td>',
        f'<td class="err">{escape(str(error))}</td>',
        f'<td>{" ".join(links)}</td>',
    ]
    return f'<tr id="pipe-{escape(p["_id"])}">{"".join(cells)}</tr>'


def _dataset_row(d: dict[str, Any], token: str | None) -> str:
    breaker = d["circuit_breaker"]
    state = f"tripped by {breaker['pipe']}, {breaker['held']} held" if breaker else ""
    href = _link(f"/api/datasets/{quote(d['_id'])}/entities", token, limit=50)
    return (f'<tr><td><a href="{href}">{escape(d["_id"])}</a></td><td class="n">{d["committed"]}</td>'
            f'<td class="n">{d["ids"]}</td><td class="n">{d["deleted"]}</td>'
            f'<td>{"yes" if d["populated"] else "no"}</td><td class="err">{escape(state)}</td></tr>')


async def status_page(request: web.Request) -> web.Response:
    """Render the page (auth: a read token, unless ``public_status_page``)."""
    daemon = daemon_of(request)
    rt = daemon.runtime
    token = request.query.get("token")
    pipes = await pipe_views(request, list(rt.config.pipes.values()))
    datasets = [dataset_view(i) for i in await rt.store.datasets()]
    head = ["pipe", "state", "last run", "read", "new", "changed", "deleted", "next run", "error", "links"]
    pipe_rows = "".join(_pipe_row(p, token) for p in pipes)
    ds_rows = "".join(_dataset_row(d, token) for d in datasets)
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>Sluice status</title><style>{STYLE}</style></head><body>
<h1>Sluice</h1>
<div class="meta">config {escape(str(rt.config_dir))} &middot; {len(pipes)} pipes &middot;
up since {escape(iso(daemon.started_at) or "")} &middot; refreshes every {REFRESH_S} s</div>
<h2>Pipes</h2>
<table id="pipes"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>{pipe_rows}</tbody></table>
<h2>Datasets</h2>
<table id="datasets"><thead><tr><th>dataset</th><th>committed offset</th><th>ids</th><th>deleted</th>
<th>populated</th><th>circuit breaker</th></tr></thead><tbody>{ds_rows}</tbody></table>
</body></html>"""
    return web.Response(text=html, content_type="text/html")
