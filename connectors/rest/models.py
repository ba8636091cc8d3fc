"""Config models of the REST connector: ``system:rest``, its operations, auth, paging, retry.

Keys follow Sesam's REST system, source and transform where the concept is Sesam's
(``operations``, ``payload_property``, ``id_expression``, ``updated_expression``,
``since_property_name``, ``since_property_location``, ``response_property``,
``allowed_status_codes``, ``ignored_status_codes``, ``replace_entity``, ``if_transform_empty``,
``verify_ssl``, ``retry_strategy``). Paging is a typed object instead of Sesam's Jinja
``next_page_link``, so each paginator can be tested on its own.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from connectors.rest.job_models import JobConfig
from connectors.rest.ledger_models import SideEffectConfig
from runtime.components import ComponentConfig, SourceConfig
from runtime.config.secrets import Secret
from runtime.templates import check_template
from runtime.workunits import WorkUnitsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_CODES = re.compile(r"^\s*\d{3}(\s*-\s*\d{3})?\s*$")
READ_METHODS = ("GET", "HEAD", "OPTIONS")
"""Methods a call of which only reads: a ``rest`` transform using another must set ``side_effects``."""


def parse_codes(spec: str) -> frozenset[int]:
    """``"200-299,404"`` -> the set of status codes.

    Raises:
        ValueError: a part is neither ``NNN`` nor ``NNN-NNN``.
    """
    codes: set[int] = set()
    for part in spec.split(","):
        if not _CODES.match(part):
            raise ValueError(f"status code list {spec!r}: {part.strip()!r} is not NNN or NNN-NNN")
        lo, _, hi = part.partition("-")
        codes.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(codes)


def _codes(value: str | None) -> str | None:
    if value is not None:
        parse_codes(value)
    return value


class BasicAuth(_Strict):
    """``{"type": "basic", "username": "u", "password": "$SECRET(pw)"}``.

    Attributes:
        type: ``basic``: HTTP basic authentication.
        username: the user name (may be a secret).
        password: the password, a ``$SECRET(...)``.
    """

    type: Literal["basic"]
    username: str | Secret
    password: Secret


class BearerAuth(_Strict):
    """``{"type": "bearer", "token": "$SECRET(token)"}``: ``Authorization: Bearer <token>``.

    Attributes:
        type: ``bearer``: a token in the ``Authorization`` header.
        token: the token, a ``$SECRET(...)``, sent as ``Authorization: Bearer <token>``.
    """

    type: Literal["bearer"]
    token: Secret


class ApiKeyAuth(_Strict):
    """``{"type": "api_key", "name": "X-Api-Key", "value": "$SECRET(k)", "location": "header"}``.

    ``location: query`` sends it as a query parameter (redacted in every error and log line).

    Attributes:
        type: ``api_key``: a key sent in a header or a query parameter.
        name: the header or query parameter carrying the key.
        value: the key, a ``$SECRET(...)``.
        location: ``header`` or ``query`` (a query key shows as ``***`` in every error and log).
    """

    type: Literal["api_key"]
    name: str = Field(min_length=1)
    value: Secret
    location: Literal["header", "query"] = "header"


class OAuth2Auth(_Strict):
    """OAuth2 token flow: ``client_credentials`` or ``refresh_token`` grant.

    A 401 makes it fetch a new token and repeat the request at once; a 401 right after a new
    token fetches another, within the request's attempts (a ``"401"`` rule's ``max_attempts``,
    else 5).

    Attributes:
        type: ``oauth2``: tokens from ``token_url``, refreshed before they expire.
        token_url: absolute URL, or relative to the system's ``base_url``.
        grant_type: ``client_credentials`` or ``refresh_token`` (needs ``refresh_token``).
        client_id, client_secret: client credentials (sent as form fields).
        refresh_token: the refresh token for the ``refresh_token`` grant (a rotated token returned
            by the server replaces it in memory, not persisted across restarts).
        scope: optional scope.
        refresh_window: seconds before expiry at which the token is refreshed (at most half the
            token's lifetime, so a token living 20 s is reused for 10 s).
        default_expires_in: lifetime in seconds assumed when the token response has no usable
            ``expires_in`` (a positive number or numeric string counts).
    """

    type: Literal["oauth2"]
    token_url: str
    grant_type: Literal["client_credentials", "refresh_token"] = "client_credentials"
    client_id: str | Secret
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    scope: str | None = None
    refresh_window: float = Field(default=30.0, ge=0)
    default_expires_in: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _grant(self) -> OAuth2Auth:
        if self.grant_type == "refresh_token" and self.refresh_token is None:
            raise ValueError("grant_type refresh_token needs refresh_token")
        return self


AuthConfig = Annotated[BasicAuth | BearerAuth | ApiKeyAuth | OAuth2Auth, Field(discriminator="type")]


class RetryRule(_Strict):
    """How one class of failures is retried.

    Attributes:
        retry: false turns retries off for these statuses.
        max_attempts: attempts in total, the first included.
        base_delay: seconds before the 2nd attempt; doubled per attempt, jitter of +-50 %.
        max_delay: cap of one backoff delay (jitter included), seconds.
        max_retry_after: the longest ``Retry-After`` honoured, seconds; a longer one fails at once
            (``Retry-After`` may be whole or fractional seconds or an HTTP date, read as GMT).
        retry_non_idempotent: also retry POST / PATCH requests after these failures even though
            the server may already have acted on them; unset: the system's
            ``retry_non_idempotent`` (a 429 and a failed connect are always retried).
    """

    retry: bool = True
    max_attempts: int = Field(default=5, ge=1, le=100)
    base_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=30.0, ge=0)
    max_retry_after: float = Field(default=300.0, ge=0)
    retry_non_idempotent: bool | None = None


class PagingConfig(_Strict):
    """How the pages of one operation are requested and when paging stops.

    Safety net (always on): a request already made in this sequence (a next link or cursor seen
    before), a cursor that does not advance, or a non-empty page equal to the previous one is a
    ``BadDataError`` naming the request.

    Attributes:
        type: ``none``; ``next_link`` (URL in the body at ``next_link_path`` or in the header
            ``next_link_header``); ``link_header`` (RFC 8288 ``Link: <..>; rel="next"``);
            ``offset``; ``page``; ``cursor`` (token from ``cursor_path`` / ``cursor_header`` sent
            back as ``cursor_param``); ``since`` (the next page is asked for with ``since_param``
            = the ``_updated`` of the last entity received, which is how Sesam JSON pull
            publishers page; needs ``_updated`` on the records or ``updated_expression``).
        page_size: page size, sent as ``size_param`` (when set) and used by ``short_page``.
        size_param: query parameter carrying ``page_size``; unset: the size is not sent.
        offset_param: ``offset`` paging: query parameter of the offset, which advances by the
            records received.
        start_offset: ``offset`` paging: the first offset.
        page_param: ``page`` paging: query parameter of the page number.
        first_page: ``page`` paging: the first page number.
        cursor_param: ``cursor`` paging: query parameter carrying the cursor.
        cursor_path: ``cursor`` paging: dotted path to the next cursor in the response body.
        cursor_header: ``cursor`` paging: response header holding the next cursor.
        next_link_path: ``next_link`` paging: dotted path to the next page's URL in the body.
        next_link_header: ``next_link`` paging: response header holding the next page's URL.
        since_param: query parameter used by ``since`` paging for pages after the first (the
            first page carries the source's own since, per ``since_property_name``).
        total_path: dotted path to the total record count in the body; when set, the body's
            total is used and headers are not looked at.
        total_header: response header holding the total record count; default ``X-Total-Count``
            (json-server, LoopBack, react-admin's REST convention), checked when a response has
            it; ``null`` turns the header check off.
        stop_on: stop conditions, any of ``empty_page``, ``short_page``, ``no_next``,
            ``total_count``; unset: ``no_next`` for link/cursor types, ``empty_page`` +
            ``total_count`` for offset/page/since. ``short_page`` is opt-in, because a server
            that caps the page size would end a full run early and deletion tracking would delete
            the rest. A known total always wins over a short page. Whatever stops paging, a read
            short of the largest total announced is a ``BadDataError`` naming the request (a
            ``since`` page's total counts the records from its own since on); a total location
            set explicitly must be in the first response.
        max_pages: hard cap on pages per paging sequence.
        on_max_pages: ``fail``: reaching ``max_pages`` while the server indicates more pages is an
            error naming the request (a silent cut would let deletion tracking delete the rest);
            ``stop``: stop there.
    """

    type: Literal["none", "next_link", "link_header", "offset", "page", "cursor", "since"] = "none"
    page_size: int | None = Field(default=None, ge=1)
    size_param: str | None = None
    offset_param: str = "offset"
    start_offset: int = 0
    page_param: str = "page"
    first_page: int = 1
    cursor_param: str = "cursor"
    since_param: str = "since"
    cursor_path: str | None = None
    cursor_header: str | None = None
    next_link_path: str | None = None
    next_link_header: str | None = None
    total_path: str | None = None
    total_header: str | None = "X-Total-Count"
    stop_on: list[Literal["empty_page", "short_page", "no_next", "total_count"]] | None = None
    max_pages: int | None = Field(default=None, ge=1)
    on_max_pages: Literal["fail", "stop"] = "fail"

    @model_validator(mode="after")
    def _consistent(self) -> PagingConfig:
        if self.type == "next_link" and not (self.next_link_path or self.next_link_header):
            raise ValueError("paging type next_link needs next_link_path or next_link_header")
        if self.type == "cursor" and not (self.cursor_path or self.cursor_header):
            raise ValueError("paging type cursor needs cursor_path or cursor_header")
        stops = self.stop_on or []
        if "short_page" in stops and self.page_size is None:
            raise ValueError("stop_on short_page needs page_size")
        if "total_count" in stops and not (self.total_path or self.total_header):
            raise ValueError("stop_on total_count needs total_path or total_header")
        if self.total_path and self.total_header and "total_header" in self.model_fields_set:
            raise ValueError("set total_path or total_header, not both")
        return self


class OperationConfig(_Strict):
    """A named operation of a REST system; every key may be overridden by the source/transform.

    Templates are Jinja2, sandboxed; they see ``since``, ``properties`` (the component's
    ``properties`` object), in the transform ``entity``, and in a source over ``work_units`` the
    unit's ``unit`` and ``unit_key``. An undefined variable is an error naming the request.

    Attributes:
        url: Jinja template; relative to the system's ``base_url`` unless absolute.
        method: HTTP method; unset: ``GET``.
        params: Jinja template per query parameter.
        headers: Jinja template per header.
        payload: a template string (rendered; must be JSON for ``json``), or a JSON value whose
            strings are templates.
        payload_type: ``json``, ``form`` or ``text``; unset: ``json``.
        payload_property: dotted path to the record list in the response; unset or ``""``: the
            body. A single object counts as one record.
        id_expression: template over the record's fields giving ``_id`` (else the record needs a
            string ``_id``).
        updated_expression: template giving ``_updated`` (the since value); an integer literal
            becomes an int.
        deleted_expression: template over the record; ``true`` (any case) marks the entity
            ``_deleted`` (delta streams and tombstones such as Kinto's ``deleted``).
        paging: how pages are requested and when paging stops (``PagingConfig``); unset: no
            paging.
    """

    url: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    payload: Any = None
    payload_type: Literal["json", "form", "text"] | None = None
    payload_property: str | None = None
    id_expression: str | None = None
    updated_expression: str | None = None
    deleted_expression: str | None = None
    paging: PagingConfig | None = None

    @field_validator("url", "id_expression", "updated_expression", "deleted_expression")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, "template")

    @field_validator("params", "headers")
    @classmethod
    def _templates(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for k, v in (value or {}).items():
            check_template(v, k)
        return value

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        """Every string of the payload is a template: compiled now, not at the first request."""
        _check_payload(value)
        return value


def _check_payload(value: Any) -> None:
    """Raise ValueError if a string of a JSON-like payload is not a valid template."""
    if isinstance(value, str):
        check_template(value, "payload")
    elif isinstance(value, dict):
        for item in value.values():
            _check_payload(item)
    elif isinstance(value, list):
        for item in value:
            _check_payload(item)


OPERATION_KEYS = tuple(OperationConfig.model_fields)


class RestSystemConfig(_Strict):
    """``{"_id": "crm", "type": "system:rest", "base_url": "https://api.example.com/v1/"}``.

    Attributes:
        type: the system type, ``system:rest``.
        base_url: prefix of every relative operation ``url``; an absolute ``http://`` or
            ``https://`` URL.
        headers: sent with every request; values may be ``$SECRET(...)``.
        auth: one of the auth objects, by ``type``: ``basic``, ``bearer``, ``api_key`` or
            ``oauth2``; unset: no authentication.
        verify_ssl: verify TLS certificates.
        connect_timeout: seconds to open a connection.
        read_timeout: seconds between two chunks of the response.
        concurrency: requests in flight at once, shared by every pipe using the system (also the
            aiohttp connection limit).
        rate_limit: requests per second, shared the same way; a 429's ``Retry-After`` pauses the
            whole system; unset: unlimited.
        retry_strategy: rules (``RetryRule``) keyed ``"429"``, ``"500-599"``, ``"502,504"``,
            ``"connection"`` or ``"default"``; the key naming fewest codes wins (Sesam).
        retry_non_idempotent: also retry POST and PATCH after 5xx, timeouts and dropped
            connections, although the server may already have applied them; by default those
            methods are retried only after a 429 or a connection that never opened (sources that
            POST read-only queries can safely set it; a ``retry_strategy`` rule may override it
            for its statuses).
        operations: named operations (``OperationConfig``); sources and transforms name one by
            ``operation``.
    """

    type: Literal["system:rest"]
    base_url: str = Field(min_length=1)
    headers: dict[str, str | Secret] = Field(default_factory=dict)
    auth: AuthConfig | None = None
    verify_ssl: bool = True
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=1000)
    rate_limit: float | None = Field(default=None, gt=0)
    retry_strategy: dict[str, RetryRule] = Field(default_factory=dict)
    retry_non_idempotent: bool = False
    operations: dict[str, OperationConfig] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"must be an absolute http:// or https:// URL, got {value!r}")
        return value

    @field_validator("retry_strategy")
    @classmethod
    def _keys(cls, value: dict[str, RetryRule]) -> dict[str, RetryRule]:
        for key in value:
            if key not in ("default", "connection"):
                parse_codes(key)
        return value


class _Call(OperationConfig):
    """Keys a source or transform shares: the system, the operation, inline overrides.

    Attributes:
        system: ``_id`` of the ``system:rest`` to call.
        operation: name of one of the system's ``operations`` whose keys this component starts
            from (an unknown name is a config error); every operation key may also be set (or
            overridden) inline. Optional when the keys are inline.
        properties: an object the templates see as ``properties``.
    """

    system: str = Field(min_length=1)
    operation: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)

    def system_problems(self, system_id: str, system: Any) -> list[tuple[str, str]]:
        """The system must be a ``system:rest`` with the named ``operation`` (else the source or
        transform would refuse to open)."""
        if not isinstance(system, RestSystemConfig):
            kind = "source" if isinstance(self, SourceConfig) else "transform"
            return [("system", f"system {system_id!r} is a {system.type}; the rest {kind} needs a system:rest")]
        if self.operation is not None and self.operation not in system.operations:
            known = ", ".join(sorted(system.operations)) or "none"
            return [("operation", f"system {system_id!r} has no operation {self.operation!r}; known: {known}")]
        return []


class RestSourceConfig(_Call, SourceConfig):
    """``{"type": "rest", "system": "crm", "operation": "list-items"}`` plus since keys.

    Attributes:
        since_property_name: name of the query parameter or header carrying since.
        since_property_location: ``query``, ``header`` or ``template`` (only ``{{ since }}``
            in the templates; Sesam's ``manual``).
        initial_since_value: since sent while the pipe has none stored yet.
        supports_since: the source uses since (Sesam's continuation flag).
        is_chronological: records come in increasing ``_updated`` order, so since is
            checkpointed per batch (Sesam).
        is_since_comparable: ``_updated`` values can be ordered, so the maximum is stored at the
            end of the run (Sesam).
        work_units: split the reading into work units (DIL; the core ``work_units`` block: a
            ``dataset``, ``values`` and/or ``windows``): one paging sequence per unit, its
            templates seeing the unit's variables as ``unit`` (``{{ unit._id }}``,
            ``{{ unit.window_start }}``) and its key as ``unit_key``, and ``since`` being the
            unit's watermark (the highest ``_updated`` it has seen; sent as
            ``since_property_name`` when ``supports_since``; none on its first read and in a full
            sweep). Each page commits the unit's next page with its entities.
        job: asynchronous ingestion (DIL): each work unit reads through a job with the steps
            ``start``, ``status``, ``results`` and ``cleanup`` (``JobConfig``); without
            ``work_units`` the source has one unit, ``job``.
    """

    type: Literal["rest"]
    if_source_empty: Literal["fail"] | None = None
    since_property_name: str = "since"
    since_property_location: Literal["query", "header", "template"] = "query"
    initial_since_value: Any = None
    supports_since: bool = False
    is_chronological: bool = True
    is_since_comparable: bool = False
    work_units: WorkUnitsConfig | None = None
    job: JobConfig | None = None

    @model_validator(mode="after")
    def _units(self) -> RestSourceConfig:
        """Keys that mean nothing over work units are refused rather than ignored."""
        if self.work_units is None:
            return self
        if self.initial_since_value is not None:
            raise ValueError("initial_since_value does not apply with work_units: a unit without a watermark "
                             "reads its whole range; put the range in the units (work_units.windows, or "
                             "{{ since or ... }} in a template)")
        flags = sorted({"is_chronological", "is_since_comparable"} & self.model_fields_set)
        if flags:
            raise ValueError(f"{' and '.join(flags)} do not apply with work_units: each unit keeps the highest "
                             "_updated it has seen as its watermark; remove them")
        return self

    def system_problems(self, system_id: str, system: Any) -> list[tuple[str, str]]:
        """Those of :class:`_Call`, and over work units a paging (inline or the operation's) that
        may stop early: a unit cut at ``max_pages`` would count as done, and the full sweep's
        deletion tracking would delete what it did not read."""
        problems = super().system_problems(system_id, system)
        if problems or self.work_units is None:
            return problems
        paging = self.paging or (system.operations[self.operation].paging if self.operation else None)
        if paging is not None and paging.on_max_pages == "stop":
            key = "paging.on_max_pages" if self.paging else "operation"
            problems.append((key, "on_max_pages: stop does not apply with work_units: a unit cut at max_pages "
                                  "would count as done and deletion tracking would delete what it did not read; "
                                  "use on_max_pages: fail"))
        return problems

    @model_validator(mode="after")
    def _job(self) -> RestSourceConfig:
        if self.job is not None and (self.paging is not None or self.supports_since):
            raise ValueError("job: results are read by locator and a unit's watermark replaces since; "
                             "remove paging and supports_since")
        return self


class RestTransformConfig(_Call, SideEffectConfig, ComponentConfig):
    """``{"type": "rest", "system": "crm", "operation": "get-item"}``: one call per entity.

    Attributes:
        concurrency: calls in flight for this transform (the system's ``concurrency`` also
            applies); the output keeps the input order.
        response_property: property receiving the parsed response body (JSON, else text).
        response_status_property: property receiving the response status; unset: not kept.
        response_headers_property: property receiving the response headers; unset: not kept.
        allowed_status_codes: accepted statuses, e.g. ``"200-299,404"``; any other status fails
            the run naming the request.
        ignored_status_codes: statuses that drop the entity silently.
        replace_entity: emit the response's records (at ``payload_property``, ``_id`` via
            ``id_expression``) instead of the input entity.
        if_transform_empty: ``fail``: a non-empty batch that yields no entity fails the run (per
            batch, not per run).
        call_deleted: also call the operation for ``_deleted`` entities; by default they pass
            through unchanged, so deletions propagate without a request.
        side_effects: the calls change the target (Sesam's ``side_effects``; capture response
            with transform, seeds 001/002): every call's outcome and whole response are committed
            per entity in the outcome ledger (``response_dataset``, the keys below) while other
            calls are in flight; the payload is the entity's ``payload``, else the operation's
            template, else the entity without its ``_`` and ``$`` properties (as for the ``rest``
            sink); an entity already sent with the same payload (or, for a POST,
            one whose record the target created) is not sent again, its output is rebuilt from
            the ledger; a pipe with it may not be a publisher nor track dependencies (config
            errors). False: calls are reads, made again on every run. Unset: false for a ``GET``,
            ``HEAD`` or ``OPTIONS`` operation; for any other method a config error asks for it to
            be set (Sesam's default is true: a write must not be repeated by mistake).
    """

    type: Literal["rest"]
    concurrency: int = Field(default=8, ge=1, le=1000)
    response_property: str = "response"
    response_status_property: str | None = None
    response_headers_property: str | None = None
    allowed_status_codes: str = "200-299"
    ignored_status_codes: str | None = None
    replace_entity: bool = False
    if_transform_empty: Literal["accept", "fail"] = "accept"
    call_deleted: bool = False
    side_effects: bool = False

    @field_validator("allowed_status_codes", "ignored_status_codes")
    @classmethod
    def _status_codes(cls, value: str | None) -> str | None:
        return _codes(value)

    @model_validator(mode="after")
    def _side_effects(self) -> RestTransformConfig:
        """The ledger keys mean nothing without ``side_effects``: refused rather than ignored."""
        if self.side_effects:
            if self.replace_entity:
                raise ValueError("side_effects keeps the entity with its response (capture response); "
                                 "replace_entity does not apply: remove it")
            return self
        ledger_keys = sorted(set(SideEffectConfig.model_fields) & self.model_fields_set)
        if ledger_keys:
            raise ValueError(f"{', '.join(ledger_keys)} only apply with side_effects: true (the outcome ledger); "
                             "set side_effects or remove them")
        return self

    def system_problems(self, system_id: str, system: Any) -> list[tuple[str, str]]:
        """Those of :class:`_Call`, and a ``lookup_operation`` the system has."""
        problems = super().system_problems(system_id, system)
        lookup = self.lookup_operation
        if not problems and lookup is not None and lookup not in system.operations:
            known = ", ".join(sorted(system.operations)) or "none"
            problems.append(("lookup_operation", f"system {system_id!r} has no operation {lookup!r}; known: {known}"))
        if not problems and "side_effects" not in self.model_fields_set:
            named = system.operations[self.operation].method if self.operation is not None else None
            method = self.method or named or "GET"
            if method not in READ_METHODS:
                problems.append(("side_effects", (
                    f"the calls are {method} requests, which change the target; say which: side_effects: true "
                    "(each entity version is sent once, its outcome kept in a ledger) or side_effects: false "
                    "(the calls are reads, made again on every run). Sesam's default is true")))
        return problems
