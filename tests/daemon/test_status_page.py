"""The status page loaded in headless Debian Chromium (installed by scripts/setup.d/30-daemon.sh):
a screenshot is taken and the rendered DOM must show every pipe with its state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.conftest import READ, Api, counter_pipe

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,700"]


async def chromium(tmp: Path, *args: str) -> str:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    with anyio.fail_after(90):
        done = await anyio.run_process(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode(errors="replace")


async def test_status_page_in_headless_chromium(start_daemon: Any, session: Any, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run scripts/setup.d/30-daemon.sh (apt-get install chromium)")
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
    shot = tmp_path / "status.png"
    await chromium(tmp_path, f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000

    dom = await chromium(tmp_path, "--dump-dom", url)
    states = dict(re.findall(r'<tr id="pipe-([^"]+)">.*?<span class="state [^"]+">([^<]+)</span>', dom))
    assert states == {"orders": "ok", "broken-feed": "failed", "idle-pipe": "disabled", "parked": "off"}
    assert "pipes.yaml exists; failing on purpose" in dom  # the failed run's error is shown
    assert f'href="/api/pipes/orders/log?limit=50&amp;token={READ}"' in dom
    assert f'href="/api/datasets/orders/entities?limit=50&amp;token={READ}"' in dom
    assert 'http-equiv="refresh"' in dom

    async with session.get(f"{served.url}/api/pipes/orders/log?limit=50&token={READ}") as r:
        assert r.status == 200  # the page's links work from a browser (token in the query)


async def _all_ran(api: Api, pipes: list[str]) -> bool:
    for pipe in pipes:
        p = await api.pipe(pipe)
        if p["runs"] < 1 or p["running"]:
            return False
    return True
