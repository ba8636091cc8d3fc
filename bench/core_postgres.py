"""The core dataset benchmarks (a) and (b) on the PostgreSQL state store, against SQLite (issue 13 (a)).

Usage::

    .venv/bin/python bench/core_postgres.py [--n 1000000] [--rounds 2] [--workdir DIR]

Starts a temporary PostgreSQL server (``tests/servers/postgres.py``: initdb into a temporary
directory, fsync off as in the tests), then, per round and per store, runs in fresh child
processes (``bench/core_dataset.py --child``):

(a) N small entities from an NDJSON ``file`` source into a ``dataset`` sink, a fresh store;
(b) the same pipe again, nothing changed (every write a no-op).

SQLite and PostgreSQL alternate within each round, so a slow phase of the VM hits both. Prints
entities/s per run and store, and the ratio PostgreSQL / SQLite per figure (the median of the
rounds). There is no target; the issue asks for the figures and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core_dataset import calibration_s, make_config, measure
from tests.servers.postgres import PostgresServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="entities of runs (a) and (b)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of (a) and (b) per store")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    server = PostgresServer.start()
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
            root = args.workdir or Path(tmp)
            root.mkdir(parents=True, exist_ok=True)
            cfg = make_config(root, args.n)
            speed_before = calibration_s()
            for i in range(args.rounds):
                for backend in ("sqlite", "postgresql"):
                    stamp = f"{backend}-{time.strftime('%Y%m%d%H%M%S')}-{i}"
                    url = asyncio.run(server.create_database(f"bench{i}")) if backend == "postgresql" else None
                    data = root / f"data-{stamp}"
                    a = measure(cfg, data, "raw", store=url)
                    b = measure(cfg, data, "raw", store=url)
                    assert a["new"] == args.n and b["unchanged"] == args.n, (a, b)
                    for name, r in (("a", a), ("b", b)):
                        rate = float(r["read"]) / float(r["run_s"])
                        rates.setdefault((backend, name), []).append(rate)
                        print(f"round {i + 1} {backend:10} ({name}) {rate:10,.0f} entities/s", flush=True)
    finally:
        server.stop()
    print()
    print("| figure | SQLite entities/s | PostgreSQL entities/s | ratio PostgreSQL / SQLite (median) |")
    print("|---|---|---|---|")
    titles = {"a": f"(a) {args.n:,} entities file -> dataset", "b": "(b) same run, nothing changed"}
    for name, title in titles.items():
        lite, pg = rates[("sqlite", name)], rates[("postgresql", name)]
        ratio = statistics.median(p / s for p, s in zip(pg, lite, strict=True))
        shown = lambda xs: "-".join(f"{x:,.0f}" for x in sorted({min(xs), max(xs)}))  # noqa: E731
        print(f"| {title} | {shown(lite)} | {shown(pg)} | {ratio:.2f} |")
    print(f"\ninfo: {args.rounds} rounds; calibration loop {speed_before:.2f} s before, {calibration_s():.2f} s after")


if __name__ == "__main__":
    main()
