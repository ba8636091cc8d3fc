"""The asynchronous-ingestion mode of the ``rest`` source: one job per work unit (DIL's
asynchronous ingestion, ``shared/reference/dil.md`` section 5: request, poll, extract; Salesforce
Bulk API 2.0 query jobs, Eloqua exports).

A unit's job goes through ``start`` -> ``status`` (polled) -> ``results`` (chunks) -> ``cleanup``.
The unit's checkpoint (committed by the sink, in the ledger) holds where the job stands::

    {"job": id, "created_us": int, "state": str, "polls": int, "interval_s": float,
     "next_poll_us": int, "watermark": the unit's watermark the job was created with,
     "ready": bool, "locator": str | None, "complete": bool}

- The job id is committed before the first poll (its own transaction): after a crash, a restart
  or a daemon stop the job is re-attached by its id, never created twice.
- A job the server no longer knows (404), that failed or that timed out is created again (once per
  attempt of the unit; logged as ``job.recreated`` with the reason); so is a job created with a
  watermark when a full sweep re-attaches it (it would not cover everything deletion tracking
  needs).
- A job not ready within ``status.max_wait_in_run_s`` leaves its unit ``waiting`` until its next
  poll (``UnitPage.wait_until_us``); a later run re-attaches it.
- Each results chunk is committed with the locator of the next one: a restart resumes at the next
  chunk, never asking again for one already committed. Memory holds one chunk, whatever the size
  of the result (bound it with the results step's own parameter, e.g. ``maxRecords``).
- ``cleanup`` runs once the last chunk is committed (the checkpoint says ``complete`` then, so a
  restart in between still cleans up).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog

from connectors.rest.body import parse_body
from connectors.rest.job_models import JobConfig, JobStep
from connectors.rest.job_results import chunk_records, next_locator
from connectors.rest.operation import Operation
from connectors.rest.system import Call, Response, RestSystem
from runtime.components import ComponentContext
from runtime.entities import Entity
from runtime.errors import BadDataError, FatalError
from runtime.sinces import since_order
from runtime.templates import Template
from runtime.workunits.model import Unit, UnitPage

log = structlog.get_logger("sluice.rest.jobs")

COMMIT_POLL_S = 0.02
"""Seconds between two looks at the ledger while waiting for a checkpoint to be committed."""


def now_us() -> int:
    return time.time_ns() // 1000


def truthy(text: str) -> bool:
    return text.strip().lower() == "true"


class _Gone(Exception):
    """The server no longer knows the job (404), it failed or timed out: create it again."""


class Step:
    """A job step's request templates, compiled once.

    Args:
        system: the open REST system (resolves relative URLs).
        step: the step's config.
        name: ``start``, ``status``, ``results`` or ``cleanup`` (named in template errors).
    """

    def __init__(self, system: RestSystem, step: JobStep, name: str) -> None:
        self.system, self.step, self.name = system, step, name
        self.url = Template(step.url, f"job.{name}.url")
        self.params = {k: Template(v, f"job.{name}.params.{k}") for k, v in step.params.items()}
        self.headers = {k: Template(v, f"job.{name}.headers.{k}") for k, v in step.headers.items()}

    def call(self, variables: dict[str, Any], where: str) -> Call:
        """The step's request for ``variables``.

        Raises:
            BadDataError: a template failed (names ``where``).
        """
        url = self.system.absolute(self.url.render(where, **variables).strip())
        return Call(self.step.method, url, {k: t.render(where, **variables) for k, t in self.params.items()},
                    {k: t.render(where, **variables) for k, t in self.headers.items()},
                    self._payload(self.step.payload, variables, where), self.step.payload_type)

    def _payload(self, value: Any, variables: dict[str, Any], where: str) -> Any:
        if isinstance(value, str):
            return Template(value, f"job.{self.name}.payload").render(where, **variables)
        if isinstance(value, dict):
            return {k: self._payload(v, variables, where) for k, v in value.items()}
        if isinstance(value, list):
            return [self._payload(v, variables, where) for v in value]
        return value


class JobReader:
    """Reads work units through asynchronous jobs (see the module docstring).

    Args:
        system: the open REST system.
        config: the ``job`` config.
        operation: the source's merged operation (``id_expression``/``updated_expression`` of
            the result records).
        properties: the source's ``properties``.
        context: the source's context (its store holds the ledger).
    """

    def __init__(self, system: RestSystem, config: JobConfig, operation: Operation,
                 properties: dict[str, Any], context: ComponentContext) -> None:
        self.system, self.config, self.operation = system, config, operation
        self.properties, self.context = properties, context
        self.steps = {name: Step(system, getattr(config, name), name)
                      for name in ("start", "status", "results", "cleanup") if getattr(config, name) is not None}
        status = config.status
        self.ready = Template(status.ready_expression, "job.status.ready_expression")
        self.failed = Template(status.failed_expression, "job.status.failed_expression") \
            if status.failed_expression else None
        self.state = Template(status.state_expression, "job.status.state_expression") \
            if status.state_expression else None
        self.job_id = Template(config.start.id_expression, "job.start.id_expression")

    async def read(self, unit: Unit) -> AsyncIterator[UnitPage]:
        """The pages of one unit's job, resuming at ``unit.checkpoint``.

        Raises:
            FatalError: the job created again in this attempt (after one that failed, timed out
                or was forgotten) failed, timed out or was forgotten too.
            BadDataError: a response was unusable (names the request).
            TransientError: the server kept failing (the system's retries are spent).
        """
        cp: dict[str, Any] = dict(unit.checkpoint or {})
        variables = {**unit.variables, "unit": unit.variables, "properties": self.properties,
                     "watermark": unit.watermark}
        recreated = False
        if cp.get("watermark") is not None and unit.watermark is None and not cp.get("complete"):
            # a full sweep must not complete with a job that asked only for what was newer
            log.warning("job.recreated", job=cp["job"], reason="the full sweep needs a job without watermark",
                        unit=unit.key)
            cp = {}
        while not cp.get("complete"):
            if "job" not in cp:
                cp = await self._create(variables)
                yield UnitPage([], checkpoint=dict(cp))
                await self._committed(unit.key, cp)
            try:
                if not cp.get("ready") and not await self._poll(cp, variables):
                    yield UnitPage([], checkpoint=dict(cp), wait_until_us=cp["next_poll_us"])
                    return
                cp["ready"] = True
                async for page in self._results(cp, variables, unit.watermark):
                    yield page
            except _Gone as gone:
                if recreated:
                    raise FatalError(f"job {cp['job']}, created again in this attempt, {gone}; the unit is "
                                     "retried with backoff", pipe=self.context.pipe) from None
                log.warning("job.recreated", job=cp["job"], reason=str(gone), unit=unit.key)
                recreated, cp = True, {}
        if "cleanup" in self.steps:
            yield UnitPage([], checkpoint=dict(cp))  # flushes the last chunk's progress
            await self._committed(unit.key, cp)
            await self._cleanup(cp, variables)

    async def _create(self, variables: dict[str, Any]) -> dict[str, Any]:
        response = await self._send("start", variables, parse=True)
        self.system.check(response)
        job = self.job_id.render(response.location, **variables, response=response.data).strip()
        if not job:
            raise BadDataError("job.start.id_expression gave an empty job id; fix it", location=response.location)
        interval = self.config.status.poll_interval_s
        log.info("job.created", job=job)
        now = now_us()
        return {"job": job, "created_us": now, "state": "created", "polls": 0, "interval_s": interval,
                "next_poll_us": now + int(interval * 1e6), "watermark": variables["watermark"]}

    async def _committed(self, key: str, cp: dict[str, Any]) -> None:
        """Return once the ledger holds ``cp`` as unit ``key``'s checkpoint (the sink committed it)."""
        while not any(u.key == key and u.checkpoint == cp
                      for u in await self.context.store.work_units(self.context.pipe, status="running")):
            await anyio.sleep(COMMIT_POLL_S)

    async def _poll(self, cp: dict[str, Any], variables: dict[str, Any]) -> bool:
        """Poll until the job is ready (True) or the run's waiting budget is spent (False);
        ``cp`` is updated in place (state, polls, interval, next poll).

        Raises:
            _Gone: 404, failed, or past ``timeout_s``.
        """
        status = self.config.status
        deadline = time.monotonic() + status.max_wait_in_run_s
        while True:
            wait = max(0.0, (cp["next_poll_us"] - now_us()) / 1e6)
            if wait > 0 and time.monotonic() + wait > deadline:
                log.info("job.waiting", job=cp["job"], state=cp["state"], next_poll_s=round(wait, 3))
                return False
            await anyio.sleep(wait)
            response = await self._send("status", {**variables, "job": cp["job"]}, parse=True, gone=True)
            self.system.check(response)
            where, body = response.location, response.data
            cp["state"] = self.state.render(where, **variables, response=body).strip() if self.state else "polling"
            cp["polls"] += 1
            log.debug("job.polled", job=cp["job"], state=cp["state"], polls=cp["polls"])
            if self.failed is not None and truthy(self.failed.render(where, **variables, response=body)):
                raise _Gone(f"failed at the server (state {cp['state']!r})")
            if truthy(self.ready.render(where, **variables, response=body)):
                return True
            if status.timeout_s is not None and now_us() - cp["created_us"] > status.timeout_s * 1e6:
                raise _Gone(f"was not ready within timeout_s {status.timeout_s}")
            cp["interval_s"] = min(cp["interval_s"] * status.poll_backoff, status.max_poll_interval_s)
            cp["next_poll_us"] = now_us() + int(cp["interval_s"] * 1e6)

    async def _results(self, cp: dict[str, Any], variables: dict[str, Any], watermark: Any) -> AsyncIterator[UnitPage]:
        """The result chunks from ``cp["locator"]`` on, each page carrying the next locator; the
        last one's checkpoint says ``complete``."""
        step, seen = self.config.results, set[str | None]()
        while True:
            locator = cp.get("locator")
            extra = {step.locator_param: locator} if locator else {}
            response = await self._send("results", {**variables, "job": cp["job"]}, parse=step.format == "json",
                                        gone=True, params=extra)
            self.system.check(response)
            where = response.location  # computed once per chunk, not per record
            entities = [self.operation.entity(r, where) for r in chunk_records(step, response)]
            watermark = _highest(entities, watermark)
            following = next_locator(step, response)
            if following is not None and following in seen | {locator}:
                raise BadDataError(f"results locator {following!r} was given before; the job's paging loops",
                                   location=where)
            seen.add(following)
            cp.update(locator=following, complete=following is None)
            yield UnitPage(entities, checkpoint=dict(cp), watermark=watermark)
            if following is None:
                return

    async def _cleanup(self, cp: dict[str, Any], variables: dict[str, Any]) -> None:
        response = await self._send("cleanup", {**variables, "job": cp["job"]}, gone=True)
        if response.status != 404:
            self.system.check(response)
        log.info("job.cleaned_up", job=cp["job"], status=response.status)

    async def _send(self, name: str, variables: dict[str, Any], *, parse: bool = False, gone: bool = False,
                    params: dict[str, str] | None = None) -> Response:
        """Send a step's request; ``gone``: a 404 raises :class:`_Gone` (cleanup returns it)."""
        call = self.steps[name].call(variables, f"pipe {self.context.pipe!r} job.{name}")
        call.params.update(params or {})
        response = await self.system.send(call, parse=parse_body if parse else None)
        if gone and response.status == 404 and name != "cleanup":
            raise _Gone("is no longer known to the server (404)")
        return response


def _highest(entities: list[Entity], watermark: Any) -> Any:
    """The highest ``_updated`` of ``entities`` and ``watermark`` (by instant for datetimes)."""
    for e in entities:
        value = e.get("_updated")
        if value is not None and (watermark is None or since_order(value) > since_order(watermark)):
            watermark = value
    return watermark
