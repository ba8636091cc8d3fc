"""The ``rest`` source (Sesam): pages through a REST operation and yields one list per page.

Continuation (sesam.md §2 "Continuation"): the flags ``supports_since``, ``is_chronological`` and
``is_since_comparable`` are configurable (Sesam defaults false / true / false), ``_updated`` comes
from ``updated_expression``, and since is sent as ``since_property_name`` in the query, a header,
or only through ``{{ since }}`` in the templates (``since_property_location: template``).
``initial_since_value`` is used while the pipe has no since stored.

With ``work_units`` (DIL) the source is read one unit at a time (:mod:`connectors.rest.units`):
the unit's variables are in every template, paging runs inside each unit, and the unit's
watermark is its since.

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
from connectors.rest.paging import PageGuard, PageRequest, PageResponse, Paginator, make_paginator
from connectors.rest.system import Call, RestSystem
from connectors.rest.units import read_unit
from runtime.components import ComponentConfig, Source
from runtime.entities import Entity
from runtime.errors import FatalError
from runtime.workunits import Unit, UnitPage, WorkUnitsConfig

Page = tuple[list[Entity], PageRequest | None]
"""One page read: its entities and the request of the next page (None: it was the last)."""

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


    def first_call(self, since: Any, context: dict[str, Any] | None = None) -> Call:
        """The request of the first page for ``since`` (None: the initial since value), the
        templates also seeing ``context`` (a work unit's ``unit`` and ``unit_key``)."""
        c = self.config
        if since is None:
            since = c.initial_since_value
        where = f"pipe {self.context.pipe!r} source"
        if context is not None:
            where += f" unit {context['unit_key']!r}"
        call = self.operation.render({"since": since, "properties": c.properties, **(context or {})}, where)
        if since is not None and c.supports_since:
            if c.since_property_location == "query":
                call.params[c.since_property_name] = str(since)
            elif c.since_property_location == "header":
                call.headers[c.since_property_name] = str(since)
        return call

    async def read(self, since: Any) -> AsyncIterator[list[Entity]]:
        call = self.first_call(since)
        paginator = make_paginator(self.operation.paging, call.url)
        async for entities, _ in self.pages(call, paginator, paginator.first()):
            if entities:
                yield entities
        self.complete = not paginator.cut

    def read_unit(self, unit: Unit) -> AsyncIterator[UnitPage]:
        """One work unit: through its job for a ``job`` source (:mod:`connectors.rest.jobs`),
        else its own paging sequence (:mod:`connectors.rest.units`)."""
        if self.jobs is not None:
            return self.jobs.read(unit)
        return read_unit(self, unit)

    async def pages(self, call: Call, paginator: Paginator, request: PageRequest | None,
                    context: dict[str, Any] | None = None) -> AsyncIterator[Page]:
        """Each page from ``request`` on, with the request of the page after it (paging advanced).

        Raises:
            BadDataError: a bad page, a paging loop or paging short of the announced total.
        """
        op, system = self.operation, self.system
        guard = PageGuard()
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
            entities = [op.entity(r, where, context) for r in records]
            last = entities[-1].get("_updated") if entities else None
            request = paginator.next(PageResponse(response.url, response.headers, body, len(records), where, last))
            yield entities, request
