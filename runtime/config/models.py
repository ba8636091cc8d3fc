"""Typed configuration: pipes, pumps, systems, and the validated specs the runtime runs.

Keys follow Sesam's where the concept is Sesam's (``_id``, ``type``, ``source``, ``transform``,
``sink``, ``pump``, ``batch_size``, ``disable_set_last_seen``, ``compaction.keep_versions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PumpConfig(_Strict):
    """When a pipe runs (Sesam's pump). Used by the daemon; ``sluice run`` ignores schedules.

    Attributes:
        mode: ``scheduled``, ``manual`` (on request only) or ``off`` (never runs).
        schedule_interval: seconds between run starts (daemon); unset: 30 (dataset source) / 900
            (any other source) with ±5 % jitter, Sesam's defaults. Over 3600 the last start is
            persisted: a run missed while the daemon was down happens when it is back.
        cron_expression: cron schedule in UTC (daemon; wins over ``schedule_interval``); a fire
            time missed while the daemon was down runs when it is back.
        rescan_run_count: every Nth run is a full rescan (with deletion tracking).
        rescan_cron_expression: a full rescan when this cron schedule (UTC) has fired since the
            last one.
        partial_rescan_run_count: every Nth run starts with since moved back by
            ``partial_rescan_delta`` (set both or neither).
        partial_rescan_delta: how far a partial rescan moves since back (integer since: that many;
            ISO-8601 datetime since: seconds).
        run_at_startup: run once when the daemon starts (and again when it reloads its config).
        max_retries_per_entity: failed attempts (at most one per run) before an entity a sink
            keeps refusing goes to ``dead_letter_dataset`` (Sesam; only with a dead-letter
            dataset).
        dead_letter_dataset: dataset for entities a sink keeps refusing, a dataset of its own (no
            pipe may write it: not this pipe's sink, not another's); unset, an entity error fails
            the run.
    """

    mode: Literal["scheduled", "manual", "off"] = "scheduled"
    schedule_interval: float | None = Field(default=None, gt=0)
    cron_expression: str | None = None
    rescan_run_count: int | None = Field(default=None, ge=1)
    rescan_cron_expression: str | None = None
    partial_rescan_run_count: int | None = Field(default=None, ge=1)
    partial_rescan_delta: float | None = Field(default=None, gt=0)
    run_at_startup: bool = False
    max_retries_per_entity: int = Field(default=5, ge=1)
    dead_letter_dataset: str | None = Field(default=None, min_length=1)

    @field_validator("cron_expression", "rescan_cron_expression")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        try:  # valid syntax may still never fire ("0 0 30 2 *": 30 February)
            croniter(value, datetime.now(UTC)).get_next(float)
        except CroniterBadDateError:
            raise ValueError(f"cron expression {value!r} never fires") from None
        return value

    @model_validator(mode="after")
    def _partial(self) -> PumpConfig:
        if (self.partial_rescan_run_count is None) != (self.partial_rescan_delta is None):
            raise ValueError("partial_rescan_run_count and partial_rescan_delta go together")
        return self


class CompactionConfig(_Strict):
    """Retention of the sink dataset (Sesam's ``compaction``).

    Attributes:
        keep_versions: versions kept per ``_id`` in the sink dataset; ``null`` keeps every version
            (history).
    """

    keep_versions: int | None = Field(default=2, ge=1)


class DependencyTrackingConfig(_Strict):
    """Limits of dependency tracking (Sesam's ``dependency_tracking``): how many source entities a
    run may have to put through the pipe again because entities its hops joined changed.

    Attributes:
        dependency_warning_threshold: more pending entities than this log a warning naming the
            hop and the join values with the most matches.
        dependency_error_threshold: more than this fail the run with that error, before anything
            is processed (typical causes: a join on a blank or shared value; fix the join, e.g.
            with ``tuples``, set ``"track-dependencies": false`` on the hop, or run ``--full``).
    """

    dependency_warning_threshold: int = Field(default=10_000, ge=0)
    dependency_error_threshold: int = Field(default=50_000, ge=0)


class PipeModel(_Strict):
    """A pipe: a source, optional transforms and a sink, and when it runs (Sesam's pipe).

    This is the pipe object as written in a config file: the components are still untyped
    objects, each validated by its type's own model (``sluice describe source TYPE``).

    Attributes:
        _id: pipe id (no ``/``); also the default sink dataset.
        type: always ``pipe``.
        name, description, comment: free text.
        metadata: a free object kept with the config.
        source: a source object (``sluice describe source``).
        transform: a transform object or a list of them, applied in order.
        sink: a sink object; unset: ``{"type": "dataset"}``, whose dataset is the pipe ``_id``.
        pump: when the pipe runs (``sluice describe pump``).
        batch_size: entities per batch (1-100,000).
        max_batch_bytes: a batch is cut earlier once its entities' JSON reaches this many bytes,
            so memory stays bounded (mailboxes hold 4 batches each) however large the entities.
        disable_set_last_seen: refuse resets and since changes (protects a delta-only source's
            history; Sesam).
        compaction: retention of the sink dataset: ``{"keep_versions": N}`` keeps N versions per
            ``_id`` (default 2); ``{"keep_versions": null}`` keeps every version.
        dependency_tracking: limits of dependency tracking (``sluice describe``; Sesam).
    """

    id: str = Field(alias="_id", min_length=1)
    type: Literal["pipe"]
    name: str | None = None
    description: str | None = None
    comment: str | None = None
    source: dict[str, Any]
    transform: dict[str, Any] | list[dict[str, Any]] | None = None
    sink: dict[str, Any] | None = None
    pump: PumpConfig = Field(default_factory=PumpConfig)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    disable_set_last_seen: bool = False
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    dependency_tracking: DependencyTrackingConfig = Field(default_factory=DependencyTrackingConfig)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SystemModel(BaseModel):
    """A system object: ``_id`` and ``type`` (``system:...``); the rest is the type's own config.

    Attributes:
        _id: system id (no ``/``), named by the ``system`` key of sources and transforms.
        type: the system type, ``system:<kind>``.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    id: str = Field(alias="_id", min_length=1)
    type: str


@dataclass(frozen=True)
class ComponentSpec:
    """A validated component: its class and typed config.

    Attributes:
        kind: ``source``, ``transform`` or ``sink``.
        key: where it sits in the pipe (``source``, ``transform[1]``, ``sink``).
        cls: the registered class.
        config: an instance of ``cls.Config``.
    """

    kind: str
    key: str
    cls: type[Any]
    config: Any


@dataclass(frozen=True)
class SystemSpec:
    """A validated system: ``_id``, file, class and typed config."""

    id: str
    file: str
    cls: type[Any]
    config: Any


@dataclass(frozen=True)
class PipeSpec:
    """A validated pipe, ready to run.

    Attributes:
        id: pipe ``_id``.
        file: the config file it came from.
        model: the pipe-level settings (pump, batch_size, ...).
        source, transforms, sink: validated components.
        reads: datasets the pipe reads (dependency order, signalling).
        writes: datasets the pipe writes.
    """

    id: str
    file: str
    model: PipeModel
    source: ComponentSpec
    transforms: list[ComponentSpec]
    sink: ComponentSpec
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)

    def tracked_datasets(self) -> dict[str, str]:
        """The datasets whose changes this pipe tracks (dataset -> hop position): its first
        transform's, when its source supports dependency tracking (Sesam)."""
        if not self.transforms or not self.source.cls.tracks_dependencies:
            return {}
        first = self.transforms[0]
        return first.cls.datasets_tracked(first.config)
