"""Post-actions (``after_ingest``) against the asyncssh SFTP server: done only after the file's
data is committed, once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runtime import Runtime
from tests.core.test_crash import committed
from tests.files.common import csv_rows, live, run_both, two_step
from tests.files.conftest import SftpBackend


@pytest.mark.parametrize("after", [{"move_to": "archive"}, {"delete": True}])
async def test_post_action_after_the_commit_and_once(tmp_path: Path, sftp, after) -> None:  # type: ignore[no-untyped-def]
    backend = SftpBackend(sftp)
    for i in range(3):
        backend.put(f"f{i}.csv", csv_rows([f"{i}a", f"{i}b"]).encode())
    db = tmp_path / "data" / "sluice.db"
    seen: dict[str, int] = {}
    sftp.counters.on_rename = lambda path: seen.setdefault(path, committed(db, "ingest") + 1)
    cfg = tmp_path / "config"
    cfg.mkdir()
    # the listing's circuit breaker is on (the default deletion factor 0.5)
    pipes = two_step(backend.system(), files={"after_ingest": after, "concurrency": 1})
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {f"{i}{s}" for i in range(3) for s in "ab"}
        if "move_to" in after:
            # each file's two rows were committed before its rename was asked for
            assert sorted(seen.items()) == [("f0.csv", 2), ("f1.csv", 4), ("f2.csv", 6)]
            assert sorted(p.name for p in (sftp.root / "archive").iterdir()) == ["f0.csv", "f1.csv", "f2.csv"]
            assert dict(sftp.counters.renames) == {f"f{i}.csv": 1 for i in range(3)}
        else:
            assert dict(sftp.counters.removes) == {f"f{i}.csv": 1 for i in range(3)}
        assert not list(sftp.root.glob("*.csv"))
        reads = sum(sftp.counters.reads.values())
        lr, fr = await run_both(rt)  # the files left the listing: nothing read, nothing moved again
        # all 3 of 3 listed files left, expected: deleted from the listing without tripping its breaker
        assert lr.status == fr.status == "completed", lr.error
        assert await live(rt, "listing") == {} and fr.units["retired"] == 3
        assert sum(sftp.counters.reads.values()) == reads
        assert sum(sftp.counters.renames.values()) + sum(sftp.counters.removes.values()) == 3
        assert len(await live(rt, "ingest")) == 6
        lr, fr = await run_both(rt)  # and stays quiet: no new version in the listing
        assert lr.status == "completed" and lr.new == lr.changed == lr.deleted == 0
        # files that vanish without a post-action of Sluice still trip it (here before any ingest)
        for i in range(3, 6):
            backend.put(f"f{i}.csv", csv_rows([f"{i}a"]).encode())
        assert (await rt.run_pipe("listing")).status == "completed"
        for i in range(3, 6):
            backend.remove(f"f{i}.csv")
        lr = await rt.run_pipe("listing")
        assert lr.status == "failed" and "circuit breaker" in str(lr.error)


@pytest.mark.parametrize("after", [{"move_to": "archive"}, {"delete": True}])
async def test_a_file_overwritten_before_its_post_action_is_left_and_read_again(
        tmp_path: Path, sftp, after, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """DATA SAFETY: a partner overwrites ``a.csv`` after Sluice read it and before its post-action
    (while the file's last batch commits). The post-action checks the file's version first and
    leaves the new one (deleting or archiving it would lose it unread); the next run reads it, then
    moves or deletes it. The overwrite is made at that moment by wrapping the source's real wait
    for the commit (a race no server can be asked to hit on time)."""
    from connectors.storage.download import FilesSource

    backend = SftpBackend(sftp)
    backend.put("a.csv", csv_rows(["1", "2"]).encode())
    committed_wait = FilesSource._committed

    async def then_overwritten(self: FilesSource, key: str, watermark: dict) -> bool:  # type: ignore[type-arg]
        done = await committed_wait(self, key, watermark)
        if not overwritten:
            overwritten.append(key)
            backend.put("a.csv", csv_rows(["1", "2", "3"], prefix="v2-").encode())
        return done

    overwritten: list[str] = []
    monkeypatch.setattr(FilesSource, "_committed", then_overwritten)
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step(backend.system(), files={"after_ingest": after})))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert overwritten == ["a.csv"]
        assert {k: e["value"] for k, e in (await live(rt, "ingest")).items()} == {"1": "v1", "2": "v2"}
        assert not sftp.counters.renames and not sftp.counters.removes  # the new version left in place
        assert b"v2-3" in (sftp.root / "a.csv").read_bytes()
        _, fr = await run_both(rt)  # listed again with its new version: read, then moved or deleted
        assert fr.status == "completed", fr.error
        assert {k: e["value"] for k, e in (await live(rt, "ingest")).items()} == {"1": "v2-1", "2": "v2-2", "3": "v2-3"}
    assert not (sftp.root / "a.csv").exists()
    if "move_to" in after:
        assert b"v2-3" in (sftp.root / "archive" / "a.csv").read_bytes()
        assert dict(sftp.counters.renames) == {"a.csv": 1}
    else:
        assert dict(sftp.counters.removes) == {"a.csv": 1}
