"""Shared helpers of the REST benchmarks: the test API in its own process, config writing."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def start_api(items: int, latency: float = 0.0, *, lean: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start tests/servers/faulty_api.py (or with ``lean`` the minimal bench/_fast_http.py) in a
    separate process (so its memory and CPU are not counted as the client's); returns the process
    and its base URL."""
    module = "bench._fast_http" if lean else "tests.servers.faulty_api"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--items", str(items), "--latency", str(latency)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the test API did not start")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)


def write(config_dir: Path, objects: list[dict]) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "bench.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))
    return config_dir


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
