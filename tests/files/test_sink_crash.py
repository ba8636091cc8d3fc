"""Crash safety of the ``files`` sink: ``sluice run`` SIGKILLed while it uploads a file and while
a complete file waits for its rename, against the asyncssh SFTP server (in a thread of the test
process). Each file is uploaded under a temporary name (``.<name>.tmp``) and renamed when
complete, and the checkpoint is committed after the rename: after a restart the files under the
final name pattern hold every entity, each file complete, and no partial file carries a final
name. The restarts delete the temporary files the killed runs left on the server, and the staged
local files they left (``SLUICE_TMPDIR``). On SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import orjson
import pytest
import yaml

from tests.core.test_crash import run_to_end
from tests.files.conftest import SftpBackend
from tests.files.test_crash import kill_when
from tests.servers.storage import SftpServer

N, ROLL, PAD, FINAL = 200, 100, 45_000, "out/people-*.ndjson"


@pytest.fixture
def server(threaded_sftp: SftpServer) -> SftpServer:
    return threaded_sftp


def setup(tmp_path: Path, server: SftpServer) -> tuple[Path, Path]:
    # 45 KB an entity: a file of 100 is two SFTP writes (asyncssh writes up to 4 MiB at once), so
    # a held second write leaves a partly written file
    people = tmp_path / "people.ndjson"
    people.write_bytes(b"".join(orjson.dumps({"_id": f"p{i:04}", "pad": "x" * PAD}) + b"\n" for i in range(N)))
    pipes = [{"_id": "drop", **SftpBackend(server).system()},
             {"_id": "people", "type": "pipe", "source": {"type": "file", "path": str(people)}},
             {"_id": "export", "type": "pipe", "batch_size": 50, "source": {"type": "dataset", "dataset": "people"},
              "sink": {"type": "files", "system": "drop", "path": "out", "prefix": "people-",
                       "roll_entities": ROLL}}]
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    return cfg, tmp_path / "data"


def files(server: SftpServer) -> dict[str, bytes]:
    return {str(p.relative_to(server.root)): p.read_bytes() for p in server.root.rglob("*") if p.is_file()}


def staged(base: Path) -> list[str]:
    """The files in the staging directories under ``base`` (their lock files aside)."""
    return sorted(p.name for p in base.glob("sluice-staging-*/*") if p.name != "lock")


async def test_sigkill_while_writing_files_then_restart(tmp_path: Path, server: SftpServer,
                                                        store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, data = setup(tmp_path, server)
    local = tmp_path / "staging"
    local.mkdir()
    monkeypatch.setenv("SLUICE_TMPDIR", str(local))  # inherited by `sluice run`
    c = server.counters
    # first kill: once the first file is renamed, the next upload is held after its first block
    c.on_rename = lambda path: setattr(c, "write_delay_s", 30)
    async def held() -> bool:
        return c.writes_held > 0

    await kill_when(cfg, data, store_url, held)
    c.on_rename, c.write_delay_s = None, 0
    partial = [p for p in files(server) if not fnmatch.fnmatch(p, FINAL)]
    assert len(partial) == 1 and partial[0].startswith("out/.people-") and partial[0].endswith(".tmp")
    assert 0 < len(files(server)[partial[0]]) < ROLL * PAD  # written in part, under its temporary name
    assert len([p for p in files(server) if fnmatch.fnmatch(p, FINAL)]) == 1
    assert len(staged(local)) == 1  # the killed run's staged file
    # second kill: a complete file uploaded under its temporary name, its rename held
    c.rename_delay_s = 30
    async def renaming() -> bool:
        return sum(c.rename_requests.values()) > 1

    await kill_when(cfg, data, store_url, renaming)
    c.rename_delay_s = 0
    assert len([p for p in files(server) if fnmatch.fnmatch(p, FINAL)]) == 1
    second = [p for p in files(server) if not fnmatch.fnmatch(p, FINAL)]
    assert second != partial and len(second) == 1  # the first run's partial file was deleted at the start
    run_to_end(cfg, data, store_url)
    final = {p: body for p, body in files(server).items() if fnmatch.fnmatch(p, FINAL)}
    rows = {p: [orjson.loads(line) for line in body.splitlines()] for p, body in final.items()}
    assert sorted(len(r) for r in rows.values()) == [ROLL] * (N // ROLL)  # each file complete
    ids = [e["_id"] for r in rows.values() for e in r]
    # every entity; none twice, because each checkpoint here falls right after a rename (rolls of
    # 100 in batches of 50): the run after a kill resumes after the last renamed file
    assert sorted(ids) == [f"p{i:04}" for i in range(N)]
    assert set(files(server)) == set(final)  # no temporary file left on the server
    assert staged(local) == [] and not list(local.iterdir())  # the killed runs' staging swept, the last one's removed
