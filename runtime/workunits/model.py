"""What a source configures and sees of work units (DIL): the ``work_units`` config block, the
unit a source reads, and the pages it yields.

A leaf module: components import it, it imports nothing of the runtime but pydantic models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.entities import Entity


class WindowsConfig(BaseModel):
    """Time windows, one unit each (DIL's datetime watermark with ``ms.work.unit.partition``).

    Attributes:
        start: the first window's start, an ISO 8601 date or datetime (UTC when no offset).
        end: where windows stop: an ISO 8601 date or datetime, or ``now``. With ``now`` the last
            window is open (its end is in the future) and is read again by every run.
        unit: ``hour``, ``day``, ``week`` (7 days from ``start``) or ``month``.
        size: how many ``unit`` s one window spans.
    """

    model_config = ConfigDict(extra="forbid")
    start: str = Field(min_length=1)
    end: str = "now"
    unit: Literal["hour", "day", "week", "month"] = "day"
    size: int = Field(default=1, ge=1)

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str) -> str:
        if value != "now":
            instant(value)
        return value


def instant(text: str) -> datetime:
    """An ISO 8601 date or datetime as an aware UTC datetime (naive ones are UTC).

    Raises:
        ValueError: ``text`` is neither.
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 date or datetime (or 'now')") from None
        value = datetime(day.year, day.month, day.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class WorkUnitsConfig(BaseModel):
    """``work_units``: how a source's work is split into units, each with its own ledger row,
    checkpoint and watermark (DIL's work units; ``ms.secondary.input``, ``ms.watermark``,
    ``ms.work.unit.*``). With several inputs a unit is one combination of each (the product,
    e.g. survey id x week).

    Attributes:
        dataset: one unit per non-deleted entity of this dataset (DIL's activation secondary
            input); the entity's properties are the unit's template variables. A pipe writing the
            dataset runs first (dependency order).
        key_property: the entity property that names the unit (with ``dataset``).
        values: one unit per item of a fixed list: a string (variable ``value``) or an object (its
            properties).
        windows: one unit per time window (variables ``window_start``, ``window_end``, ISO 8601
            UTC).
        max_concurrent_units: units read at the same time.
        max_units_per_run: most units one run starts (null: no limit); the rest wait for the
            next run (DIL's ``ms.work.unit.parallelism.max``).
        unit_interval_s: minimum seconds between two unit starts (DIL's
            ``ms.work.unit.pacing.seconds``).
        max_attempts: failed attempts after which a unit is ``dead`` (``sluice units retry`` puts
            it back).
        retry_backoff_s: seconds before a failed unit is due again, doubled per failed attempt.
        max_retry_backoff_s: cap of that delay, seconds.
        max_wait_in_run_s: a run waits at most this long for failed or waiting units to come due
            before it ends (they run again in a later run).
    """

    model_config = ConfigDict(extra="forbid")
    dataset: str | None = Field(default=None, min_length=1)
    key_property: str = Field(default="_id", min_length=1)
    values: list[str | dict[str, Any]] | None = None
    windows: WindowsConfig | None = None
    max_concurrent_units: int = Field(default=4, ge=1)
    max_units_per_run: int | None = Field(default=None, ge=1)
    unit_interval_s: float = Field(default=0.0, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_s: float = Field(default=30.0, ge=0)
    max_retry_backoff_s: float = Field(default=3600.0, ge=0)
    max_wait_in_run_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_input(self) -> WorkUnitsConfig:
        if self.dataset is None and self.values is None and self.windows is None:
            raise ValueError("work_units needs at least one of dataset, values or windows")
        return self


@dataclass(frozen=True)
class Unit:
    """One work unit as a source reads it.

    Attributes:
        key: the unit's key (unique per pipe).
        variables: its template variables (planning input values, window bounds).
        checkpoint: where to resume inside the unit (what a :class:`UnitPage` carried last), None
            to start at its beginning.
        watermark: the unit's high watermark from earlier runs (DIL): ask only for what is newer.
            None on the unit's first run and in a full sweep (read everything).
        attempts: failed attempts so far.
    """

    key: str
    variables: dict[str, Any]
    checkpoint: Any = None
    watermark: Any = None
    attempts: int = 0


@dataclass
class UnitPage:
    """What a source yields for a unit: entities and where the unit stands after them.

    Attributes:
        entities: the page's entities.
        checkpoint: where the unit resumes after this page (committed with the entities).
        watermark: the unit's high watermark after this page (None: unchanged).
        wait_until_us: set when the unit waits (an asynchronous job not ready): the unit stops
            here as ``waiting``, due again at that time (microseconds since the epoch).
    """

    entities: list[Entity] = field(default_factory=list)
    checkpoint: Any = None
    watermark: Any = None
    wait_until_us: int | None = None
