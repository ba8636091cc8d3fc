"""Actors and mailboxes: the data path of a pipe run.

A mailbox is a bounded anyio memory object stream carrying :class:`Batch` values. A sender waits
when the mailbox is full (backpressure); closing the sending side tells the receiver the stream
has ended. Each actor runs as a named task (``"<pipe>/<actor>"``) started with
``await task_group.start(...)`` and is "up" once it has called ``task_status.started()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runtime.entities import Entity
from runtime.errors import first_error
from runtime.store.protocol import Checkpoint


@dataclass(frozen=True)
class Batch:
    """What crosses a mailbox: entities, then optionally the checkpoint that covers them.

    Attributes:
        entities: up to ``batch_size`` entities, in source order.
        checkpoint: the pipe's continuation state after these entities, or None. A sink commits it
            only once these entities (and everything before them) are durable.
        read: how many source entities this batch stands for (before transforms filtered or
            expanded them); used for the run's ``read`` counter.
        prepared: what the sink's prepare actor made of ``entities`` (see ``Sink.prepares``).
    """

    entities: list[Entity]
    checkpoint: Checkpoint | None = None
    read: int = 0
    prepared: Any = None


@dataclass(frozen=True)
class MailboxStats:
    """A snapshot of a mailbox.

    Attributes:
        name: ``"<pipe>/<from>-><to>"``.
        capacity: maximum batches buffered.
        used: batches buffered now.
        peak: most batches ever buffered at once.
        waiting_senders: senders blocked on a full mailbox now.
        sent: batches sent so far.
    """

    name: str
    capacity: int
    used: int
    peak: int
    waiting_senders: int
    sent: int


class Mailbox:
    """A bounded, observable channel of batches between two actors.

    Args:
        name: ``"<pipe>/<from>-><to>"``, shown in statistics.
        capacity: batches buffered before ``send`` waits; must be at least 1.

    Raises:
        ValueError: capacity below 1.
    """

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox {name!r}: capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        send, receive = anyio.create_memory_object_stream[Batch](capacity)
        self._send: MemoryObjectSendStream[Batch] = send
        self._receive: MemoryObjectReceiveStream[Batch] = receive
        self._peak = 0
        self._sent = 0

    async def send(self, batch: Batch) -> None:
        """Put a batch in the mailbox, waiting while it is full.

        Raises:
            anyio.BrokenResourceError: the receiving actor is gone (its task failed).
        """
        await self._send.send(batch)
        self._sent += 1
        used = self._send.statistics().current_buffer_used
        self._peak = max(self._peak, used)

    async def close(self) -> None:
        """End the stream: the receiver's iteration stops after the buffered batches."""
        await self._send.aclose()

    async def receive_many(self, max_batches: int, max_entities: int) -> list[Batch]:
        """Wait for one batch, then take the batches already waiting, up to the limits.

        Returns an empty list once the stream has ended. Used by a sink to commit several
        batches in one transaction when it falls behind.
        """
        try:
            batches = [await self._receive.receive()]
        except anyio.EndOfStream:
            return []
        count = len(batches[0].entities)
        while len(batches) < max_batches and count < max_entities:
            try:
                batch = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            batches.append(batch)
            count += len(batch.entities)
        return batches

    def dispose(self) -> None:
        """Close both ends (idempotent); called when the run is over, however it ended."""
        self._send.close()
        self._receive.close()

    async def __aiter__(self) -> AsyncIterator[Batch]:
        async with self._receive:
            async for batch in self._receive:
                yield batch

    def statistics(self) -> MailboxStats:
        """A frozen snapshot of the mailbox's state."""
        s = self._send.statistics()
        return MailboxStats(
            self.name, self.capacity, s.current_buffer_used, self._peak,
            s.tasks_waiting_send, self._sent,
        )


async def run_workers(worker: Callable[[], Coroutine[Any, Any, None]], count: int) -> None:
    """Run ``count`` copies of ``worker`` (which share their work, e.g. one iterator) to the end;
    the first error of any of them is raised as itself, not as an exception group."""
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(worker)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
