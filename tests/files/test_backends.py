"""The two-step file download (file_listing pipe -> files pipe) against every file system it can
reach here: a local directory, an asyncssh SFTP server, moto's S3 and Azurite (fixtures in
conftest.py, all on 127.0.0.1). Download counts come from the SFTP server's and moto's request
counters; a local directory and Azurite count nothing, so those checks run on sftp and s3 only.

GCS: no emulator obstore can talk to is installable here (test-infra.md), so ``system:gcs`` is
tested only as far as building its store from config (``test_gcs_config_builds_a_store``).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.storage import download
from runtime import Runtime
from runtime.errors import TransientError
from tests.files.common import csv_rows, live, run_both, two_step
from tests.files.conftest import Backend

COUNTED = ("sftp", "s3")


def config(tmp_path: Path, backend: Backend, **kw: Any) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step(backend.system(), **kw)))
    return cfg


async def test_each_version_ingested_once(tmp_path: Path, backend: Backend) -> None:
    """Files sharing one mtime second, a file copied in with a year-old mtime, a file overwritten
    under the same path (per-file deletion tracking), a ``.tmp`` upload and a malformed file; a run
    with nothing changed downloads nothing."""
    for i in range(5):
        backend.put(f"f{i}.csv", csv_rows([i * 10, i * 10 + 1]).encode(), mtime=1_700_000_000)
    backend.put("up.csv.tmp", csv_rows([99]).encode())
    cfg = config(tmp_path, backend, listing={"include": ["*.csv"]}, files={"retry_backoff_s": 3600})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        lr, fr = await run_both(rt)
        assert lr.status == fr.status == "completed", (lr.error, fr.error)
        assert set(await live(rt, "ingest")) == {str(n) for i in range(5) for n in (i * 10, i * 10 + 1)}
        assert "up.csv.tmp" not in await live(rt, "listing")
        # two more files in that same mtime second, one malformed; one with a year-old mtime
        backend.put("f5.csv", csv_rows([50]).encode(), mtime=1_700_000_000)
        backend.put("bad.csv", b"id,value\n1,a\n2,b,extra\n", mtime=1_700_000_000)
        backend.put("old.csv", csv_rows([70]).encode(), mtime=1_700_000_000 - 365 * 86400)
        # f0 overwritten under the same path, without its row 1
        backend.put("f0.csv", csv_rows([0], prefix="w").encode(), mtime=1_700_000_100)
        lr, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        ids = await live(rt, "ingest")
        assert "50" in ids and "70" in ids and "99" not in ids
        assert "1" not in ids and ids["0"]["value"] == "w0"  # per-file deletion tracking
        assert ids["10"]["source_file"]["path"] == "f1.csv"
        units = {u.key: u for u in await rt.store.work_units("ingest")}
        assert units["bad.csv"].status == "failed" and "bad.csv:3" in (units["bad.csv"].last_error or "")
        assert {k for k, u in units.items() if u.status == "done"} == {f"f{i}.csv" for i in range(6)} | {"old.csv"}
        if backend.name in COUNTED:
            before = backend.downloads()
            lr, fr = await run_both(rt)
            assert fr.status == "completed"
            assert backend.downloads() - before == 0  # nothing changed (bad.csv waits out its backoff)


async def test_growing_file_waits_for_minimum_age(tmp_path: Path, backend: Backend) -> None:
    """With ``minimum_age_s``, a file is fetched only once two listings saw the same size and
    mtime and it is old enough: a file still growing is not read half-written."""
    backend.put("grow.csv", csv_rows([1, 2]).encode())
    cfg = config(tmp_path, backend, listing={"minimum_age_s": 1})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert (await live(rt, "listing"))["grow.csv"]["ready"] is False
        time.sleep(1.1)
        backend.put("grow.csv", csv_rows([1, 2, 3]).encode())  # it grew since the last listing
        await run_both(rt)
        time.sleep(1.1)
        assert await live(rt, "ingest") == {}
        _, fr = await run_both(rt)  # same size and mtime as the last listing, and a second old
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {"1", "2", "3"}


async def test_done_marker(tmp_path: Path, backend: Backend) -> None:
    """With ``done_marker``, a file is fetched only once ``<file>.done`` exists; markers are not
    listed."""
    backend.put("a.ndjson", b'{"id": 1}\n')
    cfg = config(tmp_path, backend, listing={"done_marker": ".done"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert (await live(rt, "listing"))["a.ndjson"]["ready"] is False and await live(rt, "ingest") == {}
        backend.put("a.ndjson.done", b"")
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "listing")) == {"a.ndjson"}
        assert set(await live(rt, "ingest")) == {"1"}


@pytest.mark.parametrize("backend", ["local", "sftp"], indirect=True)
async def test_malformed_file_dead_lettered(tmp_path: Path, backend: Backend) -> None:
    """``on_malformed: dead_letter``: the file is recorded (file and line named), its unit is done,
    it is not read again until it changes; the other files are ingested."""
    backend.put("good.csv", csv_rows([1]).encode())
    backend.put("bad.ndjson", b'{"id": 2}\n{"id": \n')
    cfg = config(tmp_path, backend, files={"on_malformed": "dead_letter", "dead_letter_dataset": "bad-files"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {"1"}  # nothing of the bad file, not even its line 1
        letters = await live(rt, "bad-files")
        assert list(letters) == ["ingest:bad.ndjson"] and "bad.ndjson:2" in letters["ingest:bad.ndjson"]["error"]
        assert (await rt.store.dataset_info("bad-files")).populated  # type: ignore[union-attr]  # hops may use it
        if backend.name in COUNTED:
            before = backend.downloads()
            await run_both(rt)
            assert backend.downloads() == before
        backend.put("bad.ndjson", b'{"id": 2}\n{"id": 3}\n', mtime=time.time() + 5)
        await run_both(rt)
        assert set(await live(rt, "ingest")) == {"1", "2", "3"}


@pytest.mark.parametrize("single_pass_bytes", [download.SINGLE_PASS_BYTES, 0], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_bad_row_after_many_batches_commits_nothing_of_the_file(
        tmp_path: Path, backend: Backend, single_pass_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """DATA SAFETY: a bad row after several batches of good ones fails the file's unit and commits
    none of its rows, whether the file is parsed once and held (small files) or checked in a first
    pass and parsed again (``SINGLE_PASS_BYTES`` 0 makes every file take that path)."""
    monkeypatch.setattr(download, "SINGLE_PASS_BYTES", single_pass_bytes)
    backend.put("good.csv", csv_rows(range(7)).encode())
    backend.put("bad.csv", (csv_rows(range(100, 111)) + "111,v111,extra\n").encode())
    pipes = two_step(backend.system(), files={"retry_backoff_s": 3600})
    pipes[2]["batch_size"] = 2
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {str(i) for i in range(7)}
        units = {u.key: u for u in await rt.store.work_units("ingest")}
        assert units["bad.csv"].status == "failed" and "bad.csv:13" in (units["bad.csv"].last_error or "")


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_rescan_reads_every_file_again_and_deletes_per_file(tmp_path: Path, backend: Backend) -> None:
    """``--full`` (a rescan) on a files pipe downloads every listed file again, fingerprints
    ignored, and per file deletes the ids it no longer gives: after a change of ``id_expression``
    the old ids go, the new ones come, and an ordinary run afterwards downloads nothing."""
    backend.put("a.csv", csv_rows([1, 2]).encode(), mtime=1_700_000_000)
    backend.put("b.csv", csv_rows([3]).encode(), mtime=1_700_000_000)
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert set(await live(rt, "ingest")) == {"1", "2", "3"}
    (tmp_path / "config" / "pipes.yaml").unlink()
    cfg = config(tmp_path, backend, files={"primary_key": None, "id_expression": "x{{ id }}"})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        before = backend.downloads()
        _, fr = await run_both(rt)
        assert fr.status == "completed" and backend.downloads() == before  # an ordinary run: nothing changed
        assert set(await live(rt, "ingest")) == {"1", "2", "3"}
        fr = await rt.run_pipe("ingest", full=True)
        assert fr.status == "completed", fr.error
        assert backend.downloads() - before == 2
        assert set(await live(rt, "ingest")) == {"x1", "x2", "x3"}
        _, fr = await run_both(rt)
        assert backend.downloads() - before == 2 and fr.units["done"] == 0


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_a_rescan_reads_a_file_whole_even_with_a_checkpoint_inside_it(
        tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """DATA SAFETY: a unit failed after its first batch (checkpoint ``records: 2``), then the ids
    changed (``id_expression``) and a rescan ran: the rescan reads the file from its first record,
    so no record is lost under its new id while its old id is deleted. The failure is injected by
    wrapping the source's real reading (ends the unit after its first page)."""
    from connectors.storage.download import FilesSource

    backend.put("a.csv", csv_rows(range(6)).encode(), mtime=1_700_000_000)
    real_read = FilesSource.read_unit

    async def first_page_then_fail(self: FilesSource, unit: Any) -> Any:
        async for page in real_read(self, unit):
            yield page
            raise TransientError("injected: the unit fails after its first page")

    monkeypatch.setattr(FilesSource, "read_unit", first_page_then_fail)

    def small_batches(cfg: Path) -> Path:
        pipes = yaml.safe_load((cfg / "pipes.yaml").read_text())
        pipes[2]["batch_size"] = 2
        (cfg / "pipes.yaml").write_text(yaml.safe_dump(pipes))
        return cfg

    cfg = small_batches(config(tmp_path, backend, files={"retry_backoff_s": 3600}))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        (unit,) = await rt.store.work_units("ingest")
        assert unit.status == "failed" and unit.checkpoint["records"] == 2, unit
        assert set(await live(rt, "ingest")) == {"0", "1"}
    monkeypatch.undo()
    (tmp_path / "config" / "pipes.yaml").unlink()
    cfg = small_batches(config(tmp_path, backend, files={"primary_key": None, "id_expression": "x{{ id }}"}))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        assert await rt.store.retry_units("ingest") == 1  # due now, its checkpoint kept
        fr = await rt.run_pipe("ingest", full=True)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {f"x{i}" for i in range(6)}  # x0 and x1 too


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
async def test_truncated_or_empty_version_keeps_the_files_entities(tmp_path: Path, backend: Backend) -> None:
    """DATA SAFETY: a new version of a file that is truncated (gzip cut short) or empty fails its
    unit; the entities of the earlier version stay, nothing is deleted."""
    whole = gzip.compress(csv_rows(range(50)).encode())
    backend.put("a.csv.gz", whole, mtime=1_700_000_000)
    backend.put("b.csv", csv_rows([100]).encode(), mtime=1_700_000_000)
    cfg = config(tmp_path, backend, files={"retry_backoff_s": 3600})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert len(await live(rt, "ingest")) == 51
        backend.put("a.csv.gz", whole[: len(whole) // 2], mtime=1_700_000_100)
        backend.put("b.csv", b"", mtime=1_700_000_100)
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert len(await live(rt, "ingest")) == 51
        units = {u.key: u for u in await rt.store.work_units("ingest")}
        assert units["a.csv.gz"].status == "failed" and "a.csv.gz" in (units["a.csv.gz"].last_error or "")
        assert units["b.csv"].status == "failed" and "no records" in (units["b.csv"].last_error or "")


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_unchanged_files_are_not_claimed(tmp_path: Path, backend: Backend) -> None:
    """A re-run decides about unchanged files in planning (one ledger read): their units are
    planned closed and stay ``done``, so the run neither claims nor downloads nor commits them; a
    file that changes is opened again and read once."""
    for i in range(3):
        backend.put(f"f{i}.csv", csv_rows([i]).encode(), mtime=1_700_000_000)
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.units["done"] == 3
        downloads = backend.downloads()
        _, fr = await run_both(rt)
        assert fr.status == "completed" and fr.units["done"] == 0 and fr.units["planned"] == 3
        assert all(u.status == "done" and u.closed for u in await rt.store.work_units("ingest"))
        backend.put("f1.csv", csv_rows([1], prefix="w").encode(), mtime=1_700_000_100)
        _, fr = await run_both(rt)
        assert fr.units["done"] == 1 and (await live(rt, "ingest"))["1"]["value"] == "w1"
        _, fr = await run_both(rt)
        assert fr.units["done"] == 0 and backend.downloads() - downloads == 1


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
async def test_empty_listing_deletes_nothing(tmp_path: Path, backend: Backend) -> None:
    """DATA SAFETY: a listing that suddenly finds nothing (a wrong prefix, an emptied mount) trips
    the listing dataset's circuit breaker (``circuit_breaker_deletion_factor``, on by default):
    no file entity is deleted, the downloaded data stays."""
    for i in range(3):
        backend.put(f"f{i}.csv", csv_rows([i]).encode())
    async with Runtime(config(tmp_path, backend), data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        for i in range(3):
            backend.remove(f"f{i}.csv")
        lr, _ = await run_both(rt)
        assert lr.status == "failed" and "circuit breaker" in str(lr.error)
        assert set(await live(rt, "listing")) == {"f0.csv", "f1.csv", "f2.csv"}
        assert set(await live(rt, "ingest")) == {"0", "1", "2"}


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_listing_failing_part_way_deletes_nothing(tmp_path: Path, backend: Backend) -> None:
    """DATA SAFETY: a recursive listing whose second directory fails after the first batches were
    committed fails the run; a full run that did not complete deletes nothing (the files of the
    directory it could not list, and a file really removed, stay listed)."""
    for d in ("a", "b"):
        for i in range(3):
            backend.put(f"{d}/{i}.csv", csv_rows([f"{d}{i}"]).encode())
    backend.put("top.csv", csv_rows([0]).encode())
    cfg = config(tmp_path, backend, listing={"recursive": True}, listing_pipe={"batch_size": 1})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert len(await live(rt, "listing")) == 7
        backend.server.counters.fail_listing.add("b")  # type: ignore[attr-defined]
        backend.remove("a/0.csv")
        lr = await rt.run_pipe("listing")
        assert lr.status == "failed" and "b" in str(lr.error) and "injected" in str(lr.error)
        assert len(await live(rt, "listing")) == 7
        fr = await rt.run_pipe("ingest")
        assert fr.status == "completed" and len(await live(rt, "ingest")) == 7


@pytest.mark.parametrize("after", [{"move_to": "archive"}, {"delete": True}])
async def test_post_actions_on_every_backend(tmp_path: Path, backend: Backend, after: dict[str, Any]) -> None:
    """The post-action checks the file's version (a ``stat``) against the one it read before it
    moves or deletes the file: the version a listing gives and a ``stat`` gives must agree on
    every store (a disagreement would leave every file in place)."""
    for i in range(3):
        backend.put(f"in/f{i}.csv", csv_rows([i]).encode())
    cfg = config(tmp_path, backend, listing={"path": "in"}, files={"after_ingest": after})
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert set(await live(rt, "ingest")) == {"0", "1", "2"}
    left = sorted(backend.files())
    assert left == ([f"archive/in/f{i}.csv" for i in range(3)] if "move_to" in after else [])


def test_gcs_config_builds_a_store() -> None:
    """No GCS emulator obstore can use runs here: only the store built from config is checked."""
    from connectors.storage.objects import GcsSystemConfig, make_store

    store = make_store(GcsSystemConfig(type="system:gcs", bucket="b", endpoint="http://127.0.0.1:1"))
    assert type(store).__name__ == "GCSStore"


@pytest.mark.parametrize("backend", ["sftp"], indirect=True)
async def test_deletions_of_a_new_version_resume_without_reading_it_again(
        tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids a new version of a file no longer gives are deleted once its entities are
    committed, a page at a time from the dataset's index (memory does not grow with the file).
    A failure between that commit and the deletions leaves the unit with them pending: its next
    try deletes them without downloading the file again. The failure is injected by wrapping the
    source's real deletion step (no server fault can land between two of Sluice's own steps)."""
    from connectors.storage.download import FilesSource

    backend.put("a.csv", csv_rows(range(6)).encode(), mtime=1_700_000_000)
    cfg = config(tmp_path, backend, files={"retry_backoff_s": 3600})
    real_gone = FilesSource._gone
    failures: list[str] = []

    def failing_once(self: FilesSource, path: str, fp: str, seen: set[str] | None) -> Any:
        if not failures:
            failures.append(path)
            raise TransientError("injected: the deletions' first try fails")
        return real_gone(self, path, fp, seen)

    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        await run_both(rt)
        assert set(await live(rt, "ingest")) == {str(i) for i in range(6)}
        backend.put("a.csv", csv_rows([0, 2, 4], prefix="w").encode(), mtime=1_700_000_100)
        monkeypatch.setattr(FilesSource, "_gone", failing_once)
        _, fr = await run_both(rt)
        unit = {u.key: u for u in await rt.store.work_units("ingest")}["a.csv"]
        assert failures == ["a.csv"] and unit.status == "failed" and "injected" in (unit.last_error or "")
        assert unit.watermark == {"fingerprint": unit.checkpoint["fingerprint"], "deletions": "pending"}
        ids = await live(rt, "ingest")
        assert {k: e["value"] for k, e in ids.items()} == {"0": "w0", "1": "v1", "2": "w2", "3": "v3", "4": "w4",
                                                          "5": "v5"}  # the new version's rows, nothing deleted yet
        downloads = backend.downloads()
        assert await rt.store.retry_units("ingest") == 1  # due now (as `sluice units retry`)
        _, fr = await run_both(rt)
        assert fr.status == "completed", fr.error
        assert backend.downloads() == downloads  # not read again
        assert {k: e["value"] for k, e in (await live(rt, "ingest")).items()} == {"0": "w0", "2": "w2", "4": "w4"}


async def test_a_listing_stopped_early_leaves_the_concurrency_limit_free(tmp_path: Path, backend: Backend) -> None:
    """A consumer that stops a listing after its first list and drops it without closing it
    (the garbage collector then finalises it in another task) takes no concurrency token for
    good: with ``concurrency: 1`` the system still downloads afterwards. (Holding the limit
    across the listing's yields left the token taken: every later operation of the system, of
    every pipe using it, waited forever.)"""
    import gc

    import anyio

    for i in range(3):
        backend.put(f"f{i}.csv", csv_rows([i]).encode())
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "pipes.yaml").write_text(yaml.safe_dump(two_step({**backend.system(), "concurrency": 1})))
    async with Runtime(cfg, data_dir=tmp_path / "data") as rt:
        drop = rt.systems["drop"]
        for _ in range(3):
            async for files in drop.list("", recursive=True, chunk=1):
                assert len(files) == 1
                break
            gc.collect()
            await anyio.sleep(0.05)  # the finalizer's aclose() runs in a task of its own
        with anyio.fail_after(10):
            assert await drop.download("f0.csv", tmp_path / "f0.csv") == len(csv_rows([0]))
