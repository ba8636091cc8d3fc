"""The ``rest`` source (Sesam): pages through a REST operation and yields one list per page.

Continuation (sesam.md §2 "Continuation"): the flags ``supports_since``, ``is_chronological`` and
``is_since_comparable`` are configurable (Sesam defaults false / true / false), ``_updated`` comes
from ``updated_expression``, and since is sent as ``since_property_name`` in the query, a header,
or only through ``{{ since }}`` in the templates (``since_property_location: template``).
``initial_since_value`` is used while the pipe has no since stored.

A bad page (not JSON, an HTML error page, wrong ``payload_property``, a record without ``_id``, a
truncated body, a paging loop, paging that ends short of the announced total) raises
:class:`BadDataError` naming the request (a body that does not parse only once the system's
retries of it are spent); the batches before it stay committed and the next run resumes from the
last committed checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson

from connectors.rest.body import parse_body
from connectors.rest.jobs import JobReader
from connectors.rest.models import RestSourceConfig
from connectors.rest.operation import Operation
from connectors.rest.paging import PageGuard, PageRequest, PageResponse, make_paginator
from connectors.rest.system import Call, RestSystem
from runtime.components import ComponentConfig, Source
from runtime.entities import Entity
from runtime.errors import FatalError
from runtime.workunits.model import Unit, UnitPage, WorkUnitsConfig

SINGLE_JOB = WorkUnitsConfig(values=["job"])
"""The work units of a ``job`` source without ``work_units``: one unit, key ``job``."""


def rest_system(context: Any, kind: str) -> RestSystem:
    """The component's REST system.

    Raises:
        FatalError: the ``system`` is not a ``system:rest``.
    """
    system = context.system
    if not isinstance(system, RestSystem):
        raise FatalError(f"the rest {kind} needs a system of type system:rest, got {type(system).__name__}; "
                         "fix the system key", pipe=context.pipe)
    return system


class RestSource(Source):
    """Pages through a REST operation, one batch per page, with Sesam's since handling."""

    Config: ClassVar[type[ComponentConfig]] = RestSourceConfig
    config: RestSourceConfig

    @classmethod
    def continuation(cls, config: Any) -> tuple[bool, bool, bool]:
        return config.supports_since, config.is_chronological, config.is_since_comparable

    @classmethod
    def full_read(cls, config: Any) -> bool:
        """A run without since reads everything, unless it sends ``initial_since_value``."""
        return not (config.supports_since and config.initial_since_value is not None)

    @classmethod
    def work_units(cls, config: Any) -> WorkUnitsConfig | None:
        """``work_units``; for a ``job`` source without it, one unit (:data:`SINGLE_JOB`)."""
        units = super().work_units(config)
        return SINGLE_JOB if units is None and config.job is not None else units

    async def open(self) -> None:
        self.system = rest_system(self.context, "source")
        self.operation = Operation(self.system, self.config, self.context.pipe)
        c = self.config
        self.jobs = JobReader(self.system, c.job, self.operation, c.properties, self.context) if c.job else None

    def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        """A ``job`` source reads each unit through its job (:mod:`connectors.rest.jobs`)."""
        if self.jobs is not None:
            return self.jobs.read(unit)
        return super().read_unit(unit)

    def first_call(self, since: Any) -> Call:
        """The request of the first page for ``since`` (None: the initial since value)."""
        c = self.config
        if since is None:
            since = c.initial_since_value
        where = f"pipe {self.context.pipe!r} source"
        call = self.operation.render({"since": since, "properties": c.properties}, where)
        if since is not None and c.supports_since:
            if c.since_property_location == "query":
                call.params[c.since_property_name] = str(since)
            elif c.since_property_location == "header":
                call.headers[c.since_property_name] = str(since)
        return call

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        call = self.first_call(since)
        op, system = self.operation, self.system
        paginator = make_paginator(op.paging, call.url)
        guard = PageGuard()
        request: PageRequest | None = paginator.first()
        while request is not None:
            params = dict(request.params) if request.follow else {**call.params, **request.params}
            page = Call(call.method, request.url, params, call.headers, call.payload, call.payload_type)
            where = system.location(page)
            guard.request(request, where)
            response = await system.send(page, parse=parse_body)
            system.check(response)
            body = response.data
            records = op.records(response, body)
            guard.page(orjson.dumps(records), len(records), where)
            count = len(records)
            entities = [op.entity(r, where) for r in records]
            if entities:
                yield entities
            last = entities[-1].get("_updated") if entities else None
            request = paginator.next(PageResponse(response.url, response.headers, body, count, where, last))
        self.complete = not paginator.cut
