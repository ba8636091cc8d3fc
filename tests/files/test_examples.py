"""The file examples in config/examples (``files-*``) run as the README's "Files" section says:
its server lines (``python -m tests.servers.file_drop KIND --port N``) and its ``sluice run`` lines
(paired by port), as subprocesses, on a free port and a temporary directory instead of the
README's; then the datasets are checked against what the server was seeded with."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.rest.test_examples import SLUICE, counts
from tests.servers.file_drop import EVENTS_PER_FILE, ORDERS_PER_FILE
from tests.servers.real import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_NAMES = sorted(p.name for p in (REPO / "config" / "examples").glob("files-*"))
EXPECTED = {
    "files-sftp-drop": {"partner-files": (3, 0), "partner-orders": (3 * ORDERS_PER_FILE, 0)},
    "files-s3-prefix": {"landing-events": (2 * EVENTS_PER_FILE, 0)},
    "files-s3-export": {"customers": (5, 0)},
}


def readme_block() -> tuple[list[str], list[str]]:
    """(server lines, run lines) of the README's file examples block."""
    block = (REPO / "README.md").read_text().split("<!-- file-examples -->\n```sh\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    return ([ln for ln in lines if ln.startswith("python -m tests.servers.file_drop ")],
            [ln for ln in lines if " sluice run config/examples/" in ln])


def test_the_readme_runs_every_file_example() -> None:
    _, runs = readme_block()
    assert sorted(r.rsplit("/", 1)[1] for r in runs) == EXAMPLE_NAMES == sorted(EXPECTED)


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_file_example_runs_as_the_readme_says(example: str, tmp_path: Path) -> None:
    servers, runs = readme_block()
    run_line = next(r for r in runs if r.endswith(f"/{example}"))
    serve_line = next(s for s in servers if re.search(r"--port (\d+)", s)[1] in run_line)  # type: ignore[index]
    readme_port = re.search(r"--port (\d+)", serve_line)[1]  # type: ignore[index]
    port = str(free_port())
    workdir = str(tmp_path / "server")

    def local(line: str) -> str:
        return line.replace(readme_port, port).replace("/tmp/sluice-sftp", workdir)

    serve_cmd = shlex.split(local(serve_line).removesuffix(" &"))
    words = shlex.split(local(run_line))
    settings = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    run_cmd = [SLUICE if w == "sluice" else w for w in words if w not in {f"{k}={v}" for k, v in settings.items()}]
    assert serve_cmd[0] == "python" and run_cmd[:2] == [SLUICE, "run"]
    env = {**os.environ, **settings, "SLUICE_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    server = subprocess.Popen([sys.executable, *serve_cmd[1:]], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        ready = Path(workdir) / "secrets.json" if "sftp" in serve_line else None
        wait_listening(int(port), server, ready)
        done = subprocess.run(run_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        if example == "files-s3-export":
            files = exported_files(f"http://127.0.0.1:{port}")
            assert len(files) == 3 and all(k.startswith("customers/customers-") for k in files)
            assert sorted(orjson.loads(line)["_id"] for body in files.values() for line in body.splitlines()) == [
                "c1", "c2", "c3", "c4", "c5"]
    finally:
        server.terminate()
        server.wait(15)
    assert done.returncode == 0, done.stderr[-3000:]
    got = counts(tmp_path / "data")
    assert {k: v for k, v in got.items() if not k.startswith("files-listing-")} == EXPECTED[example]


def exported_files(url: str) -> dict[str, bytes]:
    """The objects of the bucket ``outgoing`` on the example's S3 server."""
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="outgoing").get("Contents", [])]
    return {k: client.get_object(Bucket="outgoing", Key=k)["Body"].read() for k in keys}


def wait_listening(port: int, server: subprocess.Popen[bytes], ready: Path | None, timeout_s: float = 40.0) -> None:
    """Return once the server accepts connections on ``port`` (and wrote ``ready``, if given)."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited with {server.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if ready is None or ready.exists():
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} within {timeout_s} s")
