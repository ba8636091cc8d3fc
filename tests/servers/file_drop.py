"""File servers seeded for the file examples in config/examples (README "Files"):

* ``python -m tests.servers.file_drop sftp --port 8201 --dir /tmp/sluice-sftp``: the asyncssh SFTP
  server of the tests, its root ``DIR/root`` seeded with ``outbox/orders-1.csv`` ..
  ``orders-3.csv`` (50 orders each); it writes ``DIR/known_hosts`` (its host key) and
  ``DIR/secrets.json`` (``{"drop-sftp-key": <client private key>}``, for ``--secrets-file``).
* ``python -m tests.servers.file_drop s3 --port 8202``: moto's S3 server with bucket ``landing``
  holding ``exports/events-1.ndjson.gz`` and ``events-2.ndjson.gz`` (40 events each), and an
  empty bucket ``outgoing`` (the export example's target); credentials ``test``/``test``.
  ``--latency-s 0.02`` makes each request wait that long first (bench/files_download.py).

Each runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
from pathlib import Path

ORDERS_PER_FILE, EVENTS_PER_FILE = 50, 40


def orders_csv(n: int) -> bytes:
    rows = "".join(f"{n}-{i},{n * 100 + i},{i * 2.5:.2f}\n" for i in range(ORDERS_PER_FILE))
    return ("order_id,customer,amount\n" + rows).encode()


def events_ndjson(n: int) -> bytes:
    lines = (json.dumps({"event_id": f"e{n}-{i}", "kind": "click" if i % 2 else "view", "n": i})
             for i in range(EVENTS_PER_FILE))
    return gzip.compress(("\n".join(lines) + "\n").encode())


async def serve_sftp(port: int, workdir: Path) -> None:
    from tests.servers.storage import sftp_server

    root = workdir / "root"
    (root / "outbox").mkdir(parents=True, exist_ok=True)
    for n in (1, 2, 3):
        (root / "outbox" / f"orders-{n}.csv").write_bytes(orders_csv(n))
    async with sftp_server(root, port=port) as server:
        (workdir / "known_hosts").write_text(server.known_hosts)
        (workdir / "secrets.json").write_text(json.dumps({"drop-sftp-key": server.client_key}))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


def serve_s3(port: int, latency_s: float = 0.0) -> None:
    from tests.servers.storage import S3Server

    server = S3Server(port, latency_s)
    client = server.client()
    client.create_bucket(Bucket="landing")
    client.create_bucket(Bucket="outgoing")
    for n in (1, 2):
        client.put_object(Bucket="landing", Key=f"exports/events-{n}.ndjson.gz", Body=events_ndjson(n))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["sftp", "s3"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/sluice-sftp"))
    parser.add_argument("--latency-s", type=float, default=0.0, help="s3: seconds each request waits first")
    args = parser.parse_args()
    if args.kind == "sftp":
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(serve_sftp(args.port, args.dir))
    else:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        serve_s3(args.port, args.latency_s)


if __name__ == "__main__":
    main()
