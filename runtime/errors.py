"""The one exception tree of Sluice.

Branches follow what the caller does next::

    SluiceError                      root: catch this to catch everything Sluice raises
    ├── ConfigError                  fix the config; never retried (lists every problem at once)
    │   └── DtlCompileError          a DTL expression or rule set does not compile (positions named)
    ├── StoreError                   the state store failed; the run stops, nothing uncommitted is visible
    │   └── FencedError              a cluster member's lease was lost: its commit is refused (0 rows)
    ├── TransientError               retry later with backoff (network, 429/5xx, lease lost)
    ├── FatalError                   stop the pipe: retrying the same input fails the same way
    │   ├── BadDataError             a source returned data that cannot be used (names request/file/record)
    │   ├── PipeTrippedError         the dataset's circuit breaker is tripped; commit or roll back first
    │   │   └── DtlTripError         a DTL ``trip!`` transform ran: the pipe stops (no retry)
    │   ├── SourceEmptyError         ``if_source_empty: fail`` and the source returned nothing
    │   ├── DtlFailError             a DTL ``fail!`` transform ran (names the entity)
    │   └── ComponentError           a component raised something unexpected (wrapped, original chained)
    ├── EntityError                  one entity cannot be written; dead-letter it and go on
    └── OperationRefusedError        an operator request is not allowed (e.g. reset of a protected pipe)
        └── LeaseHeldError           another cluster member holds the pipe run's lease

Foreign exceptions (aiohttp, aiosqlite, ...) are translated at the boundary with
``raise SomeSluiceError(...) from exc``; none leaves ``connectors/`` or ``runtime/store``.
Every error carries its context as attributes and repeats it in the message, which ends with the
next step for the reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio


class SluiceError(Exception):
    """Root of every error Sluice raises.

    Args:
        message: what happened, with the object it happened to, and the next step.
        pipe: the pipe ``_id`` involved, if any.
    """

    def __init__(self, message: str, *, pipe: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pipe = pipe

    def __str__(self) -> str:
        return f"pipe {self.pipe!r}: {self.message}" if self.pipe else self.message


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration: where it is and why it is wrong.

    Attributes:
        file: path of the config file (or ``"<settings>"`` for flags and environment).
        pipe: the ``_id`` of the pipe or system, or None if the object has none.
        key: dotted key path inside that object, e.g. ``source.primary_key``; ``""`` for the object.
        reason: human-readable explanation.
    """

    file: str
    pipe: str | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.pipe is not None:
            where += f": {self.pipe}"
        if self.key:
            where += f": {self.key}"
        return f"{where}: {self.reason}"


class ConfigError(SluiceError):
    """Raised when configuration is invalid; lists every problem found, never retried.

    Attributes:
        problems: every :class:`ConfigProblem`, in file order.
    """

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"invalid configuration ({n} problem{'s' if n != 1 else ''}):\n{lines}\n"
            "Fix these and run `sluice check` again."
        )


class DtlCompileError(ConfigError):
    """Raised when DTL does not compile; each problem's ``key`` is the position of the bad
    expression, e.g. ``transform.rules.default[3][2]``, and every problem is listed at once."""


class StoreError(SluiceError):
    """Raised when the state store fails (I/O, corruption, schema). Nothing uncommitted is visible."""


class FencedError(StoreError):
    """Raised when a cluster member commits work whose lease it lost (it expired and another member
    took it, e.g. after a SIGSTOP or a network partition): the transaction is rolled back, nothing
    of it is visible, and the work is done again by the lease's new holder."""


class TransientError(SluiceError):
    """Raised for failures that may succeed later (network, 429, 5xx, lost lease): retry with backoff."""


class FatalError(SluiceError):
    """Raised when retrying the same input would fail the same way: the pipe run stops."""


class BadDataError(FatalError):
    """Raised when a source returns data that cannot be used: not JSON, no ``_id``, wrong shape.

    Attributes:
        location: the request, file or record the data came from (URLs redacted).
    """

    def __init__(self, message: str, *, location: str, pipe: str | None = None) -> None:
        super().__init__(f"{message} (in {location})", pipe=pipe)
        self.location = location


class PipeTrippedError(FatalError):
    """Raised when a pipe would write to a dataset whose circuit breaker is tripped.

    The next step: inspect the held changes, then ``sluice breaker commit|rollback DATASET``.
    """


class SourceEmptyError(FatalError):
    """Raised when a source configured with ``if_source_empty: fail`` returned no entities (Sesam)."""


class DependencyTrackingError(FatalError):
    """Raised when more source entities are pending for dependency tracking than the pipe's
    ``dependency_tracking.dependency_error_threshold`` (Sesam); the message names the hops and
    the join values with the most matches. Nothing was processed."""


class DtlFailError(FatalError):
    """Raised when a DTL ``["fail!", MESSAGE]`` transform runs (Sesam: the pipe run fails).

    Attributes:
        entity_id: the ``_id`` of the source entity.
    """

    def __init__(self, message: str, *, entity_id: str | None, pipe: str | None = None) -> None:
        super().__init__(f"DTL fail! on entity {entity_id!r}: {message}", pipe=pipe)
        self.entity_id = entity_id


class DtlTripError(PipeTrippedError):
    """Raised when a DTL ``["trip!", MESSAGE]`` transform runs (Sesam: trip! stops the pipe). A
    :class:`PipeTrippedError`: the run fails with nothing of it past its last committed batch
    visible, and the pump does not retry it with backoff (only its regular schedule runs it
    again); fix the data or the rule, then run the pipe.

    Attributes:
        entity_id: the ``_id`` of the source entity.
    """

    def __init__(self, message: str, *, entity_id: str | None, pipe: str | None = None) -> None:
        super().__init__(f"DTL trip! on entity {entity_id!r}: {message}", pipe=pipe)
        self.entity_id = entity_id


class ComponentError(FatalError):
    """Raised when a component raises an exception that is not a SluiceError; the original is chained."""


class ErrorRatioError(FatalError):
    """Raised when a share sink's rejected / attempted sends pass ``max_error_ratio`` after
    ``min_attempts`` sends (DIL's validation threshold, applied while sending): nothing more is
    sent in the run, and the run fails."""


class EntityError(SluiceError):
    """Raised for one entity that cannot be processed; it may go to a dead-letter dataset.

    Attributes:
        entity_id: the ``_id`` of the entity, if it has one.
        permanent: retrying cannot help (e.g. the payload does not match the pipe's JSON
            Schema): with a dead-letter dataset the entity goes there at once, without waiting
            for ``max_retries_per_entity`` runs.
    """

    def __init__(self, message: str, *, entity_id: str | None, pipe: str | None = None,
                 permanent: bool = False) -> None:
        super().__init__(message, pipe=pipe)
        self.entity_id = entity_id
        self.permanent = permanent


class OperationRefusedError(SluiceError):
    """Raised when an operator request is not allowed, e.g. resetting a ``disable_set_last_seen`` pipe."""


class LeaseHeldError(OperationRefusedError):
    """Raised when another cluster member holds the lease of a pipe run (it is running there)."""


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a failed task group: the first SluiceError in it (nested groups
    included), else the first error that is not a cancellation, else the first one."""
    flat: list[BaseException] = []

    def walk(g: BaseException) -> None:
        if isinstance(g, BaseExceptionGroup):
            for e in g.exceptions:
                walk(e)
        else:
            flat.append(g)

    walk(group)
    for exc in flat:
        if isinstance(exc, SluiceError):
            return exc
    cancelled = anyio.get_cancelled_exc_class()
    return next((exc for exc in flat if not isinstance(exc, cancelled)), flat[0])
