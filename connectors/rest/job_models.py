"""Config model of the ``rest`` source's asynchronous ingestion mode: the ``job`` key (DIL's
asynchronous ingestion, ``shared/reference/dil.md`` section 5: request, poll, extract; the real
cases are Salesforce Bulk API 2.0 query jobs and Eloqua exports).

Every step is one request rendered from Jinja templates (sandboxed, :mod:`runtime.templates`) that
see ``job`` (the job id; not in ``start``), ``properties``, ``unit`` (the work unit's variables,
also each one by its own name), ``watermark`` (the unit's high watermark; None in a full sweep)
and, in the expressions of ``start`` and ``status``, ``response`` (the parsed JSON body).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.templates import check_template


class JobStep(BaseModel):
    """One request of a job step.

    Attributes:
        url: Jinja template; relative to the system's ``base_url`` unless absolute.
        method: HTTP method (each step has its own default).
        params: Jinja template per query parameter.
        headers: Jinja template per header.
        payload: a JSON value whose strings are templates.
        payload_type: ``json``, ``form`` or ``text``.
    """

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    payload: Any = None
    payload_type: Literal["json", "form", "text"] = "json"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_template(value, "url")

    @field_validator("params", "headers")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            check_template(v, k)
        return value

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        for text in strings(value):
            check_template(text, "payload")
        return value


def strings(value: Any) -> list[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


class StartStep(JobStep):
    """``start``: creates the job (default ``POST``); the job id is committed to the unit's
    checkpoint before the first poll.

    Attributes:
        id_expression: template over ``response`` giving the job id (e.g. ``{{ response.id }}``);
            an empty id fails the unit naming the request.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    id_expression: str = Field(min_length=1)

    @field_validator("id_expression")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_template(value, "id_expression")


class StatusStep(JobStep):
    """``status``: polled (default ``GET``) until the job is ready or failed; a 404 means the
    server no longer knows the job: it is created again.

    Attributes:
        ready_expression: template over ``response``; ``true`` (any case) when the results can be
            read (e.g. ``{{ response.state == 'JobComplete' }}``).
        failed_expression: template over ``response``; ``true`` when the job failed: it is created
            again (once per attempt of the unit; a second failure fails the unit).
        state_expression: template giving the job's state as shown by ``sluice run`` and the logs
            (e.g. ``{{ response.state }}``); unset: ``polling``.
        poll_interval_s: seconds before the first poll and between polls.
        poll_backoff: factor applied to the interval after each poll that is not ready (>= 1).
        max_poll_interval_s: cap of the interval, seconds.
        max_wait_in_run_s: how long one run polls a job, seconds; then the unit is ``waiting``
            until its next poll is due (the run ends; a later run re-attaches the job by its id).
        timeout_s: seconds from the job's creation after which a job still not ready is created
            again (null: no timeout).
    """

    ready_expression: str = Field(min_length=1)
    failed_expression: str | None = None
    state_expression: str | None = None
    poll_interval_s: float = Field(default=5.0, gt=0)
    poll_backoff: float = Field(default=1.5, ge=1)
    max_poll_interval_s: float = Field(default=60.0, gt=0)
    max_wait_in_run_s: float = Field(default=60.0, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("ready_expression", "failed_expression", "state_expression")
    @classmethod
    def _expressions(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "expression")


class ResultsStep(JobStep):
    """``results``: read in chunks (default ``GET``), each chunk committed with the locator of the
    next one, so a restart resumes at the next chunk. Records get ``_id`` (and ``_updated``) from
    the source's ``id_expression`` (and ``updated_expression``).

    Attributes:
        format: ``csv`` (a header row, then rows; every value a string) or ``json``.
        payload_property: ``json``: dotted path to the record list (unset: the body).
        locator_header: response header holding the next chunk's locator (Salesforce's
            ``Sforce-Locator``); unset: ``locator_path`` or a single chunk.
        locator_path: ``json``: dotted path to the next chunk's locator in the body.
        locator_param: query parameter carrying the locator of the chunk asked for.
        end_locators: locator values meaning "no more chunks" (an absent or empty one does too).
    """

    format: Literal["csv", "json"] = "csv"
    payload_property: str | None = None
    locator_header: str | None = None
    locator_path: str | None = None
    locator_param: str = "locator"
    end_locators: list[str] = Field(default_factory=lambda: ["null"])

    @model_validator(mode="after")
    def _locator(self) -> ResultsStep:
        if self.locator_header and self.locator_path:
            raise ValueError("set locator_header or locator_path, not both")
        if self.format == "csv" and (self.locator_path or self.payload_property):
            raise ValueError("locator_path and payload_property need format json")
        return self


class CleanupStep(JobStep):
    """``cleanup``: a request once the job's results are committed (default ``DELETE``); a 2xx
    or a 404 (the job is gone already) counts as done."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "DELETE"


class JobConfig(BaseModel):
    """``job``: the source reads through an asynchronous job per work unit (DIL).

    Attributes:
        start: creates the job (``StartStep``).
        status: polls it (``StatusStep``).
        results: reads its results (``ResultsStep``).
        cleanup: optional request once the results are committed (``CleanupStep``).
    """

    model_config = ConfigDict(extra="forbid")
    start: StartStep
    status: StatusStep
    results: ResultsStep
    cleanup: CleanupStep | None = None
