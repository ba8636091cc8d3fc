"""Model-based randomised tests of the SQLite state store (issue 14).

A hypothesis state machine drives one dataset of a real :class:`SqliteStore` (a file in a
temporary directory, its own event loop, one step at a time; and, with fewer examples, a
:class:`PostgresStore` in a temporary database) through runs of a writer pipe ``w``:
batches of random writes and deletions, full runs with deletion tracking, compaction on write, a
change limit that trips the circuit breaker, failed runs; between runs the operator commits or
rolls back the breaker and compacts; at any time consumer pipes ``c1``..``c3`` read the dataset,
save or reset their sinces, and are recorded as its consumers. An in-memory :class:`Model` says
what the store must contain; after every step the store is compared with it:

* the log readers see (``read(history=True)``, paged too), the latest visible version per id
  (``read()``, ``get()``), ``dataset_info`` (committed, next offset, ids, deleted, held, trip),
  the pipes' checkpoints, ``compaction_holds`` and the deletion-tracking candidates of the
  running full run (``unseen``/``count_unseen``);
* independently of the model's compaction rules: a visible version disappears only if it was at
  or below the consumers' lowest since (Sesam: compaction never removes what a consumer has not
  read), and after a rollback every id is as it was before the tripping run (a ``_deleted`` one,
  or absent, for an id that run created).

Semantics: ``runtime/store/protocol.py`` (Sesam's datasets, circuit breaker and deletion tracking).
Deterministic: ``derandomize=True`` and no example database, so CI sees the same examples.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runtime.entities import GENERATED, Entity, strip_reserved
from runtime.errors import OperationRefusedError, PipeTrippedError
from runtime.store import Checkpoint, PostgresStore, SqliteStore, StateStore
from runtime.store.protocol import DatasetInfo, RunStart, WriteResult
from tests.core.helpers import pg_rows

DS = "ds"
WRITER = "w"
CONSUMERS = ("c1", "c2", "c3")
IDS = ("a", "a\x00", "a\x00b", "\x00", 'quo"te', "back\\slash", "emoji 🚰", "x" * 3000, "", "ünï")
"""Awkward ids: NUL inside and at the end (``a`` and ``a\\x00`` differ only by it), quotes,
backslashes, emoji, 3,000 characters, empty."""
NO_HOLD = float("inf")
BIG = 10**6


def content(entity: Entity) -> Entity:
    """What a version's hash covers: the entity without generated and dropped ``_``-keys."""
    return strip_reserved({k: v for k, v in entity.items() if k not in GENERATED})


def offset_of(since: Any) -> int:
    """A consumer's since as the offset it has read up to (-1: nothing, or not an offset)."""
    return since if isinstance(since, int) and not isinstance(since, bool) else -1


@dataclass
class Version:
    """One version in the log: ``seen`` is the last full run that saw it unchanged."""

    off: int
    id: str
    body: Entity
    previous: int | None
    seen: int | None = None


@dataclass
class Model:
    """What the store must hold for dataset ``DS`` and the pipes' checkpoints."""

    exists: bool = False
    populated: bool = False
    log: dict[int, Version] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)  # held versions included
    wrote: dict[str, int | None] = field(default_factory=dict)  # full run that wrote the latest
    committed: int = -1
    next: int = 0
    trip: dict[str, Any] | None = None
    checkpoints: dict[str, tuple[Any, int | None]] = field(default_factory=dict)
    floors: dict[str, int] = field(default_factory=dict)  # pipe -> where its last writing run started
    consumers: tuple[str, ...] = ()

    def checkpoint(self, pipe: str) -> tuple[Any, int | None]:
        return self.checkpoints.get(pipe, (None, None))

    def hold(self) -> float:
        """Compaction keeps every version above this offset: the consumers' lowest since."""
        return min((offset_of(self.checkpoint(c)[0]) for c in self.consumers), default=NO_HOLD)

    def versions_of(self, eid: str) -> list[int]:
        return sorted(off for off, v in self.log.items() if v.id == eid)

    def visible(self) -> list[Version]:
        return [self.log[off] for off in sorted(self.log) if off <= self.committed]

    def visible_latest(self) -> dict[str, Version]:
        out: dict[str, Version] = {}
        for v in self.visible():
            out[v.id] = v
        return out

    def unseen(self, sweep: int) -> dict[str, Version]:
        """Deletion-tracking candidates: live latest versions neither written nor seen by ``sweep``."""
        out = {}
        for eid, off in self.latest.items():
            v = self.log[off]
            if not v.body.get("_deleted") and self.wrote[eid] != sweep and v.seen != sweep:
                out[eid] = v
        return out

    def write(self, entities: list[Entity], *, pipe: str, checkpoint: Checkpoint | None, sweep: int | None,
              keep: int | None, change_limit: int | None, run_start: RunStart | None) -> WriteResult:
        """:meth:`SqliteStore.write_batch` on the model."""
        self.exists = True
        hold, first = self.hold(), self.next
        new = changed = deleted = same = 0
        superseded: list[str] = []
        for entity in entities:
            body, eid = content(entity), entity["_id"]
            prev = self.log[self.latest[eid]] if eid in self.latest else None
            is_del = bool(body.get("_deleted"))
            if prev is not None and prev.body == body:
                same += 1
                prev.seen = sweep if sweep is not None else prev.seen
                continue
            if is_del and prev is None:
                same += 1
                continue
            deleted, new, changed = deleted + is_del, new + (not is_del and prev is None), \
                changed + (not is_del and prev is not None)
            self.log[self.next] = Version(self.next, eid, body, None if prev is None else prev.off)
            self.latest[eid], self.wrote[eid] = self.next, sweep
            self.next += 1
            if prev is not None:
                superseded.append(eid)
        n = self.next - first
        if n and run_start is not None:
            self.floors[pipe] = run_start.offset
        if self.trip is None and change_limit is not None and n > change_limit:
            self.committed = first + change_limit - 1 if change_limit > 0 else self.committed
            before = self.checkpoint(pipe) if run_start is None else (
                run_start.checkpoint.since, run_start.checkpoint.sweep)
            self.trip = {"pipe": pipe, "committed": self.committed, "since": before[0], "sweep": before[1],
                         "limit": change_limit, "run_offset": None if run_start is None else run_start.offset}
        elif self.trip is None:
            self.committed = self.next - 1
            if keep is not None:
                self.compact(superseded, keep, hold)
        if checkpoint is not None:
            self.checkpoints[pipe] = (checkpoint.since, checkpoint.sweep)
        return WriteResult(new, changed, deleted, same, tripped=self.trip is not None)

    def compact(self, ids: list[str], keep: int, hold: float) -> int:
        """Delete versions older than each id's newest ``keep``, at or below ``hold``, except the
        id's newest version below each floor (where the last run of each pipe writing the
        dataset started); returns how many."""
        removed = 0
        for eid in dict.fromkeys(ids):
            offs = self.versions_of(eid)
            kept_for_floors = {max((o for o in offs if o < floor), default=None) for floor in self.floors.values()}
            for off in offs[: max(len(offs) - keep, 0)]:
                if off <= hold and off not in kept_for_floors:
                    del self.log[off]
                    removed += 1
        return removed

    def commit_breaker(self, keep: int | None) -> int:
        exposed = self.next - 1 - self.committed
        if keep is not None:
            held = [v.id for off, v in sorted(self.log.items()) if off > self.committed]
            self.compact(held, keep, self.hold())
        self.committed, self.trip = self.next - 1, None
        return exposed

    def rollback_held(self) -> int:
        """First half of a rollback: delete the held versions, rebuild the index of their ids."""
        gone = [off for off in self.log if off > self.committed]
        touched = {self.log[off].id for off in gone}
        for off in gone:
            del self.log[off]
        for eid in touched:
            offs = self.versions_of(eid)
            if offs:
                self.latest[eid], self.wrote[eid] = offs[-1], None
            else:
                del self.latest[eid], self.wrote[eid]
        self.next, self.trip = self.committed + 1, None
        return len(gone)

    def reverted(self, run_offset: int) -> dict[str, Entity]:
        """Second half: per id the run made visible, the version it had before the run."""
        ids = {v.id for v in self.visible() if v.off >= run_offset}
        out = {}
        for eid in ids:
            before = [o for o in self.versions_of(eid) if o < run_offset]
            out[eid] = dict(self.log[before[-1]].body) if before else {"_id": eid, "_deleted": True}
        return out


@dataclass
class Run:
    """A run of the writer pipe in progress."""

    sweep: int | None
    limit: int | None
    keep: int | None
    start: RunStart | None
    before: dict[str, Entity]  # the visible latest version of each id when the run started
    changes: int = 0


def as_model(entity: Entity) -> tuple[int, str, Entity, int | None]:
    return entity["_updated"], entity["_id"], content(entity), entity["_previous"]


def of_version(v: Version) -> tuple[int, str, Entity, int | None]:
    return v.off, v.id, v.body, v.previous


entity_specs = st.lists(
    st.tuples(st.sampled_from(IDS), st.integers(0, 2), st.sampled_from(["live", "live", "del", "del+payload"])),
    max_size=6,
)
consumer_actions = st.one_of(
    st.tuples(st.just("read"), st.sampled_from(CONSUMERS), st.integers(1, 8), st.booleans()),
    st.tuples(st.just("reset"), st.sampled_from(CONSUMERS),
              st.one_of(st.none(), st.integers(-1, 40), st.just("2024-01-01T00:00:00Z"))),
    st.tuples(st.just("set"), st.lists(st.sampled_from(CONSUMERS), unique=True, max_size=3), st.booleans()),
)
"""What a consumer pipe does: read a page, be reset to a since, or the consumers are recorded."""
batches = entity_specs.map(lambda specs: ("batch", specs))
run_steps = st.lists(st.one_of(batches, batches, batches, consumer_actions), min_size=1, max_size=6)
"""A run's batches, with what consumers do meanwhile."""


def entities_of(specs: list[tuple[str, int, str]]) -> list[Entity]:
    out: list[Entity] = []
    for eid, value, kind in specs:
        e: Entity = {"_id": eid} if kind == "del" else {"_id": eid, "v": value}
        if kind != "live":
            e["_deleted"] = True
        out.append(e)
    return out


class StoreMachine(RuleBasedStateMachine):
    """Drives a real SQLite store and the model with the same operations, checking after each."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-store-model-"))
        self.loop = asyncio.new_event_loop()
        self.store = self.new_store()
        self.do(self.store.open())
        self.model = Model()
        self.run: Run | None = None
        self.sweeps = 0
        self.batches = 0
        self.visible_before: set[int] = set()  # offsets readers saw at the previous check
        self.hold_before = NO_HOLD  # the consumers' lowest since at the previous check
        self.tripped_run: Run | None = None
        self.checks = 0

    def new_store(self) -> StateStore:
        return SqliteStore(self.dir / "state.db")

    def do(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.do(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, entities: list[Entity], *, checkpoint: Checkpoint | None, hold_all: bool = False,
              populate: bool = False) -> WriteResult:
        run = self.run
        assert run is not None
        limit = None if run.limit is None else max(run.limit - run.changes, 0)
        limit = 0 if hold_all else limit
        args = dict(pipe=WRITER, checkpoint=checkpoint, sweep=run.sweep, change_limit=limit, run_start=run.start)
        got = self.do(self.store.write_batch(DS, entities, keep_versions=run.keep, populate=populate, **args))
        want = self.model.write(entities, keep=run.keep, **args)
        self.model.populated = self.model.populated or populate
        assert got == want, f"write_batch({entities!r}, change_limit={limit}) returned {got}, expected {want}"
        run.changes += got.changes
        if got.tripped and self.tripped_run is None:
            self.tripped_run = run
        return got

    # -- the writer's runs --------------------------------------------------------------------
    @rule(full=st.booleans(), limit=st.sampled_from([None, 0, 1, 2, 3, 5]), keep=st.sampled_from([1, 1, 2, None]),
          with_start=st.sampled_from([True, True, True, False]), steps=run_steps,
          failed=st.sampled_from([False, False, True]), rollback=st.booleans())
    def run_pipe(self, full: bool, limit: int | None, keep: int | None, with_start: bool,
                 steps: list[tuple[Any, ...]], failed: bool, rollback: bool = True) -> None:
        """A run of the writer: batches (consumers acting meanwhile), then it completes (a full
        one tracks deletions first) or fails (what it committed stays). A full run commits its
        marker at once, so the one after a failed full run resumes it. Without ``with_start``
        the writes are a receiver's, with no run to roll back to. A tripped breaker is first
        rolled back or committed (with the run's ``keep``): a tripped pipe does not run."""
        if self.model.trip is not None:
            self.resolve_breaker(rollback, keep)
            self.check_all()
        since, sweep = self.model.checkpoint(WRITER)
        start = RunStart(self.model.next, Checkpoint(since, sweep)) if with_start else None
        before = {eid: v.body for eid, v in self.model.visible_latest().items()}
        if full:
            if sweep is None:
                self.sweeps += 1
                sweep = self.sweeps
            self.do(self.store.save_checkpoint(WRITER, Checkpoint(None, sweep)))
            self.model.checkpoints[WRITER] = (None, sweep)
        self.run = Run(sweep if full else None, limit, keep, start, before)
        for step in steps:
            if step[0] == "batch":
                self.batches += 1
                self.write(entities_of(step[1]), checkpoint=Checkpoint(since=self.batches, sweep=self.run.sweep))
            else:
                self.consumer_action(step)
            self.check_all()
        if not failed:
            self.finish_run()
        self.run = None

    def finish_run(self) -> None:
        """Deletion tracking (all tombstones held if they would pass the limit), then the final
        checkpoint, as the dataset sink does."""
        run = self.run
        assert run is not None
        if run.sweep is not None:
            count = self.do(self.store.count_unseen(DS, run.sweep))
            hold_all = run.limit is not None and run.changes + count > run.limit
            while unseen := self.do(self.store.unseen(DS, run.sweep, 3)):
                self.check_unseen_page(unseen, run.sweep)
                self.write([{**e, "_deleted": True} for e in unseen], checkpoint=None, hold_all=hold_all)
        self.batches += 1
        self.write([], checkpoint=Checkpoint(since=self.batches), populate=True)

    # -- operator actions between runs --------------------------------------------------------
    @precondition(lambda self: self.model.trip is not None)
    @rule(rollback=st.booleans(), keep=st.sampled_from([None, 1, 2]))
    def resolve_breaker(self, rollback: bool, keep: int | None) -> None:
        """The operator rolls back or commits the tripped breaker."""
        if rollback:
            self.rollback_breaker()
        else:
            self.commit_breaker(keep)

    @rule(action=st.sampled_from(["compact", "compact", "commit", "rollback"]), keep=st.sampled_from([None, 1, 2]))
    def operator(self, action: str, keep: int | None) -> None:
        """The operator compacts (refused while tripped), or commits or rolls back (refused unless
        tripped)."""
        if action == "commit":
            self.commit_breaker(keep)
        elif action == "rollback":
            self.rollback_breaker()
        else:
            self.compact(keep or 1)

    def commit_breaker(self, keep: int | None) -> None:
        if self.model.trip is None:
            with pytest.raises(OperationRefusedError, match="no tripped circuit breaker"):
                self.do(self.store.commit_breaker(DS, keep))
            return
        assert self.do(self.store.commit_breaker(DS, keep)) == self.model.commit_breaker(keep)
        self.tripped_run = None

    def rollback_breaker(self) -> None:
        trip = self.model.trip
        if trip is None:
            with pytest.raises(OperationRefusedError, match="no tripped circuit breaker"):
                self.do(self.store.rollback_breaker(DS))
            return
        committed = self.model.committed
        got = self.do(self.store.rollback_breaker(DS))
        want = self.model.rollback_held()
        if trip["run_offset"] is not None:
            want += self.revert(trip, committed)
        self.model.checkpoints[trip["pipe"]] = (trip["since"], trip["sweep"])
        assert got == want, f"rollback_breaker returned {got}, expected {want}"
        run, self.tripped_run = self.tripped_run, None
        if trip["run_offset"] is not None and run is not None:
            self.check_restored(run.before)

    def check_restored(self, before: dict[str, Entity]) -> None:
        """Independent of the model's rollback: every id is as it was before the tripping run."""
        for eid in IDS:
            now = [content(e) for e in self.do(self.store.get(DS, eid))]
            if eid in before:
                assert now == [before[eid]], f"rollback left {eid!r} as {now}, it was {before[eid]}"
            else:
                assert not now or now[0].get("_deleted"), (
                    f"rollback left {eid!r}, created by the rolled-back run, as {now}")

    def revert(self, trip: dict[str, Any], committed: int) -> int:
        """Apply the reverting versions to the model in the order the store wrote them, after
        checking that the store wrote exactly those of them that change something."""
        reverted = self.model.reverted(trip["run_offset"])
        written, _ = self.do(self.store.read(DS, since=committed, limit=BIG, history=True))
        latest = {eid: self.model.log[off].body for eid, off in self.model.latest.items()}
        changing = {eid for eid, body in reverted.items() if latest.get(eid) != body}
        order = [e["_id"] for e in written]
        assert sorted(order) == sorted(changing), f"rollback reverted {order!r}, expected {sorted(changing)!r}"
        self.model.write([reverted[eid] for eid in order], pipe=trip["pipe"], checkpoint=None, sweep=None,
                         keep=None, change_limit=None, run_start=None)
        return len(order)

    def compact(self, keep: int) -> None:
        if self.model.trip is not None:
            with pytest.raises(PipeTrippedError, match="tripped circuit breaker"):
                self.do(self.store.compact(DS, keep))
            return
        want = self.model.compact(list(dict.fromkeys(v.id for v in self.model.visible())), keep,
                                  self.model.hold())
        assert self.do(self.store.compact(DS, keep)) == want

    # -- consumers ----------------------------------------------------------------------------
    @initialize(chosen=st.sampled_from([[], [], ["c1"], ["c2", "c3"], list(CONSUMERS)]))
    def first_consumers(self, chosen: list[str]) -> None:
        """Most examples start with consumers recorded (that have read nothing: they hold all),
        the others with none (compaction held by nothing)."""
        self.set_consumers(chosen, False)

    @rule(action=consumer_actions)
    def consumer(self, action: tuple[Any, ...]) -> None:
        """A consumer pipe acts between the writer's runs."""
        self.consumer_action(action)

    def consumer_action(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        if kind == "read":
            self.consume(*args)
        elif kind == "reset":
            self.reset_consumer(*args)
        else:
            self.set_consumers(*args)

    def set_consumers(self, chosen: list[str], other: bool) -> None:
        """Record the dataset's consumers (``c3`` may read another dataset only: no hold here)."""
        self.do(self.store.set_consumers({DS: chosen, **({"other": ["c3"]} if other else {})}))
        self.model.consumers = tuple(chosen)

    def consume(self, pipe: str, limit: int, history: bool) -> None:
        """A dataset source reads a page from its since and saves where it got to."""
        since = self.model.checkpoint(pipe)[0]
        since = since if offset_of(since) == since else None
        got, end = self.do(self.store.read(DS, since=since, limit=limit, history=history))
        want, want_end = self.expected_page(since, limit, history)
        assert ([as_model(e) for e in got], end) == (want, want_end), f"read(since={since}, limit={limit})"
        self.do(self.store.save_checkpoint(pipe, Checkpoint(since=end)))
        self.model.checkpoints[pipe] = (end, None)

    def reset_consumer(self, pipe: str, since: Any) -> None:
        """An operator resets a consumer's since (a rescan moves it back: compaction must follow)."""
        self.do(self.store.reset_pipe(pipe, since))
        self.model.checkpoints[pipe] = (since, None)

    def expected_page(self, since: int | None, limit: int, history: bool) -> tuple[list[Any], int | None]:
        if not self.model.exists:
            return [], since
        low = -1 if since is None else since
        pool = self.model.visible() if history else sorted(self.model.visible_latest().values(), key=lambda v: v.off)
        page = [v for v in pool if v.off > low][:limit]
        if len(page) < limit:
            end = self.model.committed if self.model.committed > low else since
        else:
            end = page[-1].off
        return [of_version(v) for v in page], end

    # -- checks after every step --------------------------------------------------------------
    def check_unseen_page(self, page: list[Entity], sweep: int) -> None:
        want = self.model.unseen(sweep)
        assert len(page) == min(3, len(want)) and all(as_model(e) == of_version(want[e["_id"]]) for e in page)

    def get_ids(self) -> tuple[str, ...]:
        """The ids whose ``get()`` this check compares: three, in turn (``read()`` covers all)."""
        first = 3 * self.checks % len(IDS)
        return (IDS * 2)[first : first + 3]

    async def observe(self, ids: tuple[str, ...]) -> dict[str, Any]:
        """Everything the checks compare, read from the store in one pass of the event loop."""
        store, sweep = self.store, self.model.checkpoint(WRITER)[1]
        return {
            "history": await store.read(DS, since=None, limit=BIG, history=True),
            "latest": (await store.read(DS, since=None, limit=BIG))[0],
            "get": [(await store.get(DS, eid, history=True), await store.get(DS, eid)) for eid in ids],
            "info": await store.dataset_info(DS),
            "pipes": [await store.pipe_state(p) for p in (WRITER, *CONSUMERS)],
            "holds": await store.compaction_holds(DS),
            "unseen": None if sweep is None else (await store.unseen(DS, sweep, BIG),
                                                  await store.count_unseen(DS, sweep)),
        }

    @invariant()
    def check_all(self) -> None:
        ids = self.get_ids()
        m, seen = self.model, self.do(self.observe(ids))
        self.checks += 1
        history, end = seen["history"]
        assert [as_model(e) for e in history] == [of_version(v) for v in m.visible()]
        assert end == (m.committed if m.committed >= 0 else None)
        assert [as_model(e) for e in seen["latest"]] == sorted(map(of_version, m.visible_latest().values()))
        for eid, (versions, latest) in zip(ids, seen["get"], strict=True):
            want = [of_version(m.log[off]) for off in m.versions_of(eid) if off <= m.committed]
            assert [as_model(e) for e in versions] == want, repr(eid)
            assert [as_model(e) for e in latest] == want[-1:], repr(eid)
        self.check_info(seen["info"])
        for pipe, state in zip((WRITER, *CONSUMERS), seen["pipes"], strict=True):
            assert (state.since, state.sweep) == m.checkpoint(pipe), pipe
        holds = sorted((offset_of(m.checkpoint(c)[0]), c) for c in m.consumers)
        assert seen["holds"] == [(c, off) for off, c in holds]
        if seen["unseen"] is not None:
            unseen, count = seen["unseen"]
            want_unseen = m.unseen(m.checkpoint(WRITER)[1])
            assert sorted(as_model(e) for e in unseen) == sorted(map(of_version, want_unseen.values()))
            assert count == len(want_unseen)
        self.check_compaction_holds({e["_updated"] for e in history})
        self.hold_before = m.hold()

    def check_info(self, info: DatasetInfo | None) -> None:
        m = self.model
        if not m.exists:
            assert info is None
            return
        assert info is not None
        visible = m.visible_latest()
        deleted = sum(bool(v.body.get("_deleted")) for v in visible.values())
        assert (info.committed, info.next_offset, info.populated, info.ids, info.deleted, info.held) == (
            m.committed, m.next, m.populated, len(visible), deleted, m.next - 1 - m.committed)
        trip = None if info.trip is None else {k: getattr(info.trip, k) for k in m.trip or {}}
        assert (info.trip is None, trip) == (m.trip is None, m.trip)

    def check_compaction_holds(self, visible: set[int]) -> None:
        """Independent of the model's compaction: a version readers saw at the previous check is
        gone only if it was at or below the consumers' lowest since (nothing else in one step
        changes that since and removes visible versions)."""
        gone = sorted(off for off in self.visible_before - visible if off > self.hold_before)
        assert not gone, f"versions {gone} were compacted away although a consumer had not read them"
        self.visible_before = visible


TestStoreModel = pytest.mark.timeout(900)(StoreMachine.TestCase)  # passes in ~15 s; shrinking a failure takes minutes
TestStoreModel.settings = settings(max_examples=50, stateful_step_count=40, derandomize=True, database=None,
                                   deadline=None, report_multiple_bugs=False,
                                   suppress_health_check=[HealthCheck.too_slow])


class PostgresStoreMachine(StoreMachine):
    """The same machine on a PostgreSQL store: one database, emptied for each example."""

    url = ""  # set by test_the_postgresql_store_follows_the_model

    def new_store(self) -> StateStore:
        store = PostgresStore(self.url)
        self.do(pg_rows(store, "TRUNCATE datasets, log, latest, seen, hix, deps, tracking, pipes, "
                        "work_units, entity_retries, "
                        "exec_log, consumers, pipe_locks RESTART IDENTITY"))
        return store


def test_the_postgresql_store_follows_the_model(postgres_server, postgres_template) -> None:
    """The model's examples on PostgreSQL (fewer of them: each step is a few round trips)."""
    PostgresStoreMachine.url = asyncio.run(postgres_server.create_database("store_model", template=postgres_template))
    run_state_machine_as_test(PostgresStoreMachine, settings=TestStoreModel.settings.__class__(
        TestStoreModel.settings, max_examples=10))


def replay(steps: list[tuple[str, dict[str, Any]]]) -> None:
    """Run fixed steps through the state machine, checking after each (regression scenarios)."""
    machine = StoreMachine()
    try:
        for name, args in steps:
            getattr(machine, name)(**args)
            machine.check_all()
    finally:
        machine.teardown()


def test_a_consumer_reading_history_gets_every_version_written_since_it_read() -> None:
    """Issue 14 item 2: with ``keep_versions: 2`` and a consumer that read up to the first
    version, three more changes keep all four versions until it has read them."""
    def batch(value: int) -> tuple[str, dict[str, Any]]:
        return ("run_pipe", dict(full=False, limit=None, keep=2, with_start=True, failed=False,
                                 steps=[("batch", [("a\x00", value, "live")])]))

    replay([("set_consumers", dict(chosen=["c1"], other=True)), batch(0),
            ("consume", dict(pipe="c1", limit=5, history=True)), batch(1), batch(2), batch(3),
            ("consume", dict(pipe="c1", limit=5, history=True)), batch(4)])


def test_a_rollback_restores_a_version_the_tripping_run_superseded_with_keep_versions_1() -> None:
    """Compaction during a run keeps each id's newest version from before it, so rolling the run
    back restores ``a`` (not a ``_deleted`` version)."""
    replay([
        ("set_consumers", dict(chosen=[], other=False)),
        ("run_pipe", dict(full=False, limit=None, keep=1, with_start=True, failed=False,
                          steps=[("batch", [("a", 0, "live")])])),
        ("run_pipe", dict(full=True, limit=1, keep=1, with_start=True, failed=False,
                          steps=[("batch", [("a", 1, "live")]), ("batch", [("b", 0, "live")])])),
        ("resolve_breaker", dict(rollback=True, keep=None)),
    ])


async def test_compact_during_a_run_keeps_what_a_rollback_of_it_restores(store: StateStore) -> None:
    await store.write_batch(DS, [{"_id": "a", "v": 0}], pipe=WRITER, checkpoint=Checkpoint(since=1))
    start = RunStart(1, Checkpoint(since=1))
    await store.write_batch(DS, [{"_id": "a", "v": 1}], pipe=WRITER, checkpoint=Checkpoint(since=2),
                            change_limit=1, run_start=start)
    assert await store.compact(DS, 1) == 0  # the run is still going: a rollback of it needs v0
    await store.write_batch(DS, [{"_id": "b"}], pipe=WRITER, checkpoint=Checkpoint(since=3),
                            change_limit=0, run_start=start)
    await store.rollback_breaker(DS)
    assert [content(e) for e in await store.get(DS, "a")] == [{"_id": "a", "v": 0}]
