"""One daemon's membership of a cluster: registration, heartbeats, lease renewal, leadership, and
joining the runs other members start of pipes with work units.

Every ``sluice serve`` on a PostgreSQL store is a member (id ``host:pid:random``). Every third of
``cluster_lease_s`` its heartbeat, one short transaction, records that it is alive and renews the
leases and units it holds (same owner and epoch only: a lease another member took stays lost, and
the commits of its work are refused, :class:`~runtime.errors.FencedError`). The same beat takes the
``leader`` lease when it is free or expired (the leader alone starts scheduled runs), and wakes
this member's pump of each pipe with work units whose run another member started and whose units
are ready to claim, so the units of one run spread over every member.

Idle members are also woken at once (LISTEN/NOTIFY on a connection of their own): a commit that
changes a dataset, by any process on the store, signals the pumps reading it (debounced as local
changes are); units added to a pipe's ledger wake its pump to take a share of them.

A dead member's leases are never reaped: they expire, and the next claim of a lease or unit checks
the expiry itself, so another member takes them within the lease time plus one heartbeat.
(Anchors: ``shared/reference/anchors-wave2.md`` section E: no separate reaper that can stall, no
minutes-long rebalance delay, short transactions.)
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from runtime.errors import SluiceError
from runtime.pipes import strategy_of
from runtime.store.postgres.cluster import Membership
from runtime.store.postgres.store import PostgresStore

log = structlog.get_logger("sluice.cluster")


def new_membership(lease_s: float) -> Membership:
    """This process's membership: a fresh member id, host, pid and start time."""
    host, pid = socket.gethostname(), os.getpid()
    return Membership(f"{host}:{pid}:{secrets.token_hex(3)}", host, pid, time.time_ns() // 1000, lease_s)


class ClusterMember:
    """The heartbeat of one member, attached to its store (``store.cluster``).

    Args:
        store: the daemon's open PostgreSQL store.
        lease_s: lease lifetime, seconds (the daemon setting ``cluster_lease_s``).
        on_join: called with a pipe id when another member's run of it has units to claim, or
            units were added to it.
        on_dataset: called with a dataset name when a commit changed it (any process).
    """

    def __init__(self, store: PostgresStore, lease_s: float, on_join: Callable[[str], None],
                 on_dataset: Callable[[str], None]) -> None:
        self.store = store
        self.membership = new_membership(lease_s)
        self.on_join, self.on_dataset = on_join, on_dataset
        self._unlisten: Callable[[], Awaitable[None]] | None = None
        self._beating = anyio.Lock()  # a heartbeat in flight finishes before leave() starts
        self._left = False
        store.cluster = self.membership

    @property
    def member(self) -> str:
        return self.membership.member

    @property
    def leader(self) -> bool:
        return self.membership.leader

    def configure(self, config: Any, port: int | None = None) -> None:
        """Read which pipes have work units (their runs are shared) and their concurrency limits."""
        m = self.membership
        m.port = port if port is not None else m.port
        shared = {pid: spec for pid, spec in config.pipes.items() if strategy_of(spec.source) == "units"}
        m.shared = set(shared)
        m.limits = {pid: spec.source.cls.work_units(spec.source.config).max_concurrent_units
                    for pid, spec in shared.items()}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register (the first heartbeat), then beat every third of the lease until cancelled.

        Raises:
            StoreError: the first heartbeat failed (later failures are logged and retried).
        """
        await self.store.cluster_sessions()
        await self.beat()
        await self._listen()
        log.info("cluster.joined", member=self.member, lease_s=self.membership.lease_s, leader=self.leader)
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.membership.lease_s / 3)
                try:
                    await self.beat()
                    if not self.store.listening():  # the server restarted: listen again
                        await self._listen()
                    for pipe in await self.store.cluster_joinable():
                        self.on_join(pipe)
                except SluiceError as exc:  # e.g. PostgreSQL restarting: the next beat tries again
                    log.warning("cluster.heartbeat_failed", member=self.member, error=str(exc))
        finally:
            if self._unlisten is not None:
                await self._unlisten()

    async def _listen(self) -> None:
        self._unlisten = await self.store.cluster_listen(self._changed)

    def _changed(self, kind: str, name: str) -> None:
        if kind == "dataset":
            self.on_dataset(name)
        elif kind == "units":
            self.on_join(name)

    async def beat(self) -> None:
        """One heartbeat (see the module docstring); logs what was lost and leadership changes."""
        async with self._beating:
            if self._left:  # a beat after leave() would register the member and take leases again
                return
            was_leader = self.leader
            lost = await self.store.cluster_heartbeat()
        if lost:
            log.warning("cluster.leases_lost", member=self.member, leases=lost)
        if self.leader != was_leader:
            log.info("cluster.leader" if self.leader else "cluster.not_leader", member=self.member)

    async def leave(self) -> None:
        """Release everything this member holds (a clean stop); errors are logged."""
        with anyio.CancelScope(shield=True):
            async with self._beating:
                self._left = True
            try:
                await self.store.cluster_leave()
                log.info("cluster.left", member=self.member)
            except SluiceError as exc:
                log.warning("cluster.leave_failed", member=self.member, error=str(exc))
