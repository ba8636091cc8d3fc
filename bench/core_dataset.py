"""Core dataset benchmarks (issue 2): file source -> dataset sink, no-op rewrites, empty increments.

Usage::

    .venv/bin/python bench/core_dataset.py [--n 1000000] [--small 100000] [--workdir DIR]

Figures and targets (2-core machine):

(a) N small entities from a generated NDJSON file (``file`` source) into a ``dataset`` sink:
    entities/s >= 50,000; peak RSS < 300 MB and <= 1.5 x the peak RSS of the same run on
    ``--small`` entities.
(b) the same pipe again, nothing changed (every write a no-op): entities/s >= 100,000.
(c) an incremental run of a dataset -> dataset pipe with nothing new over that dataset: < 50 ms.

Every run is a fresh child process (``--child``) that opens the embedding API
(:class:`runtime.Runtime`), runs one pipe, and reports the run's own seconds (config load and store
open excluded; they are reported separately as ``open_s``) and its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux), so peak RSS is per run. The parent
prints a table with each figure, its target and the ratio measured/target (>= 1 means the target
is met for "at least" targets; <= 1 for "at most" targets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

PIPES = """\
- _id: raw
  type: pipe
  source: {type: file, path: rows.ndjson}
  sink: {type: dataset, dataset: raw}
- _id: derived
  type: pipe
  source: {type: dataset, dataset: raw}
  sink: {type: dataset, dataset: derived}
"""


def generate(path: Path, n: int) -> None:
    """Write ``n`` small entities (about 60 bytes each) as NDJSON."""
    with open(path, "wb") as fh:
        chunk: list[bytes] = []
        for i in range(n):
            chunk.append(orjson.dumps({"_id": f"e{i:07d}", "n": i, "name": f"item {i}", "ok": i % 3 == 0}))
            if len(chunk) == 10_000:
                fh.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            fh.write(b"\n".join(chunk) + b"\n")


def make_config(root: Path, n: int) -> Path:
    cfg = root / f"config-{n}"
    if not (cfg / "rows.ndjson").exists():
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "pipes.yaml").write_text(PIPES)
        generate(cfg / "rows.ndjson.part", n)
        (cfg / "rows.ndjson.part").rename(cfg / "rows.ndjson")
    return cfg


async def child(config_dir: str, data_dir: str, pipe: str, store: str | None = None) -> dict[str, object]:
    """Run one pipe once (on the store URL ``store``, default SQLite in ``data_dir``); return its figures."""
    from runtime.runtime import Runtime

    t0 = time.perf_counter()
    async with Runtime(config_dir, data_dir=data_dir, store=store) as rt:
        t1 = time.perf_counter()
        result = await rt.run_pipe(pipe)
        t2 = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"pipe {pipe} failed: {result.error}")
    return {
        "pipe": pipe, "read": result.read, "new": result.new, "changed": result.changed,
        "unchanged": result.unchanged, "deleted": result.deleted, "full": result.full,
        "run_s": t2 - t1, "open_s": t1 - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(cfg: Path, data: Path, pipe: str, profile: str | None = None,
            store: str | None = None) -> dict[str, object]:
    """Run one pipe in a fresh child process (optionally under cProfile, on the store URL
    ``store``) and return its figures."""
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += [__file__, "--child", str(cfg), str(data), pipe, *([store] if store else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"child run of {pipe} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(name: str, value: float, unit: str, op: str, target: float) -> tuple[str, ...]:
    ok = value >= target if op == ">=" else value <= target if op == "<=" else value < target
    shown = f"{target:,.0f}" if target >= 10 else f"{target:g}"
    return (name, f"{value:,.1f} {unit}", f"{op} {shown} {unit}", f"{value / target:.2f}",
            "met" if ok else "MISSED")


def calibration_s() -> float:
    """Seconds for a fixed pure-Python loop (3,000,000 additions): the machine's single-thread
    speed at the time, which on a shared VM varies run to run; compare figures only with it."""
    started = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="entities of runs (a) and (b)")
    parser.add_argument("--small", type=int, default=100_000, help="entities of the RSS baseline run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of runs a/b/c here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        prof = (lambda name: str(args.profile / f"{name}.prof")) if args.profile else (lambda name: None)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        small_cfg, big_cfg = make_config(root, args.small), make_config(root, args.n)
        stamp = time.strftime("%Y%m%d%H%M%S")
        load_before = os.getloadavg()[0]
        speed_before = calibration_s()
        small = measure(small_cfg, root / f"data-small-{stamp}", "raw")
        data = root / f"data-{stamp}"
        a = measure(big_cfg, data, "raw", prof("a"))
        b = measure(big_cfg, data, "raw", prof("b"))
        catch_up = measure(big_cfg, data, "derived")
        c = measure(big_cfg, data, "derived", prof("c"))
    assert a["new"] == args.n and b["unchanged"] == args.n and catch_up["new"] == args.n, (a, b, catch_up)
    assert c["read"] == 0 and c["full"] is False, c
    rate = lambda r: r["read"] / r["run_s"]  # noqa: E731
    rows = [
        row(f"(a) {args.n:,} entities file -> dataset", rate(a), "entities/s", ">=", 50_000),
        row("(a) peak RSS", a["peak_rss_mb"], "MB", "<", 300),
        row(f"(a) peak RSS / RSS of {args.small:,} run ({small['peak_rss_mb']:.1f} MB)",
            a["peak_rss_mb"] / small["peak_rss_mb"], "x", "<=", 1.5),
        row("(b) same run, nothing changed (no-op writes)", rate(b), "entities/s", ">=", 100_000),
        row("(c) incremental dataset -> dataset, nothing new", c["run_s"] * 1000, "ms", "<", 50),
    ]
    print("| figure | measured | target | ratio | |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print(f"info: {args.small:,} run: {rate(small):,.0f} entities/s; dataset -> dataset catch-up over "
          f"{args.n:,}: {rate(catch_up):,.0f} entities/s, peak RSS {catch_up['peak_rss_mb']:.1f} MB; "
          f"runtime open (config + store): {c['open_s'] * 1000:.0f} ms; peak RSS (b) {b['peak_rss_mb']:.1f} MB, "
          f"(c) {c['peak_rss_mb']:.1f} MB; python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; calibration loop "
          f"{speed_before:.2f} s before, {calibration_s():.2f} s after (lower is a faster CPU; figures "
          "are comparable only between runs with similar calibration)")


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(json.dumps(asyncio.run(child(*sys.argv[2:]))))
    else:
        main()
