"""Paginators: small state machines that turn one page's response into the next request.

No I/O here: :meth:`Paginator.first` gives the first :class:`PageRequest`, :meth:`Paginator.next`
takes a :class:`PageResponse` (final URL, headers, parsed body, number of records) and returns the
next request or None. Types (see :class:`~connectors.rest.models.PagingConfig`): ``none``,
``next_link`` (body path or header, e.g. Datasette's ``next_url``, Kinto's ``Next-Page``),
``link_header`` (RFC 8288, e.g. json-server), ``offset``, ``page``, ``cursor``, ``since`` (the
next page is asked for after the ``_updated`` of the last entity received, as a Sesam JSON pull
client pages a publisher).

The safety net (peers.md §4 "Pagination edge cases", §5 idea 4) is :class:`PageGuard`: a request
seen before (a next link or cursor that loops), a cursor that does not advance, or a page whose
records repeat the previous page's stops the run with a :class:`BadDataError` naming the request,
and so does paging that ends short of the total count the server announced (``total_path`` or
``total_header``, by default ``X-Total-Count``): DESIGN.md, a full run is only as complete as its
input, so an early end must never complete and feed deletion tracking.
Paginator state lives in one object per paging sequence, never shared between calls;
:meth:`Paginator.state` and :meth:`Paginator.restore` carry it across a crash as JSON (a work
unit's checkpoint: the unit resumes at its next page with the counts the total check needs).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urljoin

from connectors.rest.models import PagingConfig
from runtime.errors import BadDataError

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";]+)"?""", re.IGNORECASE)


@dataclass(frozen=True)
class PageRequest:
    """One page to request.

    Attributes:
        url: the URL (a next link carries its own query string).
        params: query parameters to set on top of the operation's own.
        follow: True when ``url`` is a server-given link: the operation's params are not re-sent.
    """

    url: str
    params: dict[str, str] = field(default_factory=dict)
    follow: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"url", "params", "follow"}``: what :meth:`from_json` reads back."""
        return {"url": self.url, "params": self.params, "follow": self.follow}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageRequest:
        return cls(data["url"], dict(data["params"]), bool(data["follow"]))

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.url, tuple(sorted(self.params.items()))


@dataclass(frozen=True)
class PageResponse:
    """What a paginator may look at.

    Attributes:
        url: the final URL of the response (relative next links resolve against it).
        headers: response headers (case-insensitive lookup via :func:`header`).
        body: the parsed JSON body.
        count: records on the page.
        location: the request, redacted, for errors.
        last_updated: the ``_updated`` of the page's last entity (``since`` paging), None if none.
    """

    url: str
    headers: Mapping[str, str]
    body: Any
    count: int
    location: str
    last_updated: Any = None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works on plain dicts too."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def dig(body: Any, path: str | None) -> Any:
    """The value at a dotted path (``data.items``; list indexes allowed), None if missing."""
    if not path:
        return body
    node = body
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def link_next(value: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, or None."""
    for target, attrs in _LINK.findall(value or ""):
        for rel in _REL.findall(attrs):
            if "next" in rel.split():
                return target
    return None


class Paginator:
    """Base: one page only (type ``none``); subclasses add the next-request rule.

    Args:
        config: the operation's paging config.
        url: the rendered URL of the first page.
    """

    STATE: ClassVar[tuple[str, ...]] = ("pages", "records", "announced")
    """The attributes :meth:`state` saves (subclasses add their position)."""

    def __init__(self, config: PagingConfig, url: str) -> None:
        self.config = config
        self.url = url
        self.pages = 0
        self.records = 0
        self.announced: int | None = None  # records the server said this sequence has
        self.cut = False
        self.stops = set(config.stop_on if config.stop_on is not None else self.default_stops())

    def default_stops(self) -> list[str]:
        return []

    def state(self) -> dict[str, Any]:
        """Where the sequence stands after :meth:`next` (JSON): pages and records so far, the
        total announced, and the page number, offset or cursor of the types that have one."""
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue a sequence from :meth:`state` (instead of :meth:`first`)."""
        for name in self.STATE:
            setattr(self, name, state[name])

    def first(self) -> PageRequest:
        return PageRequest(self.url, self.size_params())

    def size_params(self) -> dict[str, str]:
        c = self.config
        return {c.size_param: str(c.page_size)} if c.size_param and c.page_size else {}

    def next(self, response: PageResponse) -> PageRequest | None:
        """The next request, or None when paging is done.

        Raises:
            BadDataError: paging ends having read fewer records than the server announced, a
                total location set explicitly is not in the first response, ``max_pages``
                reached while more pages are indicated (``on_max_pages: fail``), or the cursor
                did not advance.
        """
        self.pages += 1
        total = self._total(response)
        if total is not None:  # the largest: a total that shrinks mid-way may hide skipped records
            self.announced = max(self._announces(total), self.announced or 0)
        self.records += response.count
        request = None if self._stopped(response, total) else self._next(response)
        if request is None:
            self._check_total(response)
            return None
        if self.config.max_pages and self.pages >= self.config.max_pages:
            if self.config.on_max_pages == "stop":
                self.cut = True  # more pages exist: the read is not complete
                return None
            raise BadDataError(
                f"paging reached max_pages {self.config.max_pages} and the server still indicates "
                "more pages; raise max_pages or set on_max_pages: stop", location=response.location)
        return request

    def _announces(self, total: int) -> int:
        """Records of the whole sequence a page's total announces (offset-like: the total)."""
        return total

    def _stopped(self, r: PageResponse, total: int | None) -> bool:
        c = self.config
        if "empty_page" in self.stops and r.count == 0:
            return True
        if total is not None and "total_count" in self.stops:
            return self.records >= (self.announced or 0)  # a known total wins over a short page
        return "short_page" in self.stops and bool(c.page_size) and r.count < (c.page_size or 0)

    def _check_total(self, r: PageResponse) -> None:
        """Paging is done: check the announced total (DESIGN.md: a full run is only as complete
        as its input).

        Raises:
            BadDataError: fewer records read than announced.
        """
        if self.announced is not None and self.records < self.announced:
            c = self.config
            where, key = (f"total_path {c.total_path!r}", "total_path") if c.total_path else (
                f"header {c.total_header}", "total_header")
            raise BadDataError(
                f"paging ended after {self.pages} page(s) having read {self.records} records, but the "
                f"server announced {self.announced} ({where}); the read is incomplete, so the run "
                "fails and deletes nothing. Check the paging config (a page parameter the server "
                f"needs, a page size it caps), or set {key}: null if that count means something else",
                location=r.location)

    def _total(self, r: PageResponse) -> int | None:
        """The total count the response announces, None if it has none.

        Raises:
            BadDataError: not an integer, or missing from the first response although its
                location was set explicitly.
        """
        c = self.config
        if c.total_path:
            key, name, raw = "total_path", c.total_path, dig(r.body, c.total_path)
        elif c.total_header:
            key, name, raw = "total_header", c.total_header, header(r.headers, c.total_header)
        else:
            return None
        if raw is None:
            if self.pages == 1 and (key == "total_path" or key in c.model_fields_set):
                raise BadDataError(f"{key} {name!r} is not in the response; fix {key} or remove it",
                                   location=r.location)
            return None
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise BadDataError(f"total count {raw!r} ({key} {name!r}) is not an integer; fix {key}",
                               location=r.location) from exc

    def _next(self, response: PageResponse) -> PageRequest | None:
        return None


class LinkPaginator(Paginator):
    """``next_link`` (body path / header) and ``link_header`` (RFC 8288)."""

    def default_stops(self) -> list[str]:
        return ["no_next"]

    def _next(self, response: PageResponse) -> PageRequest | None:
        c = self.config
        if c.type == "link_header":
            link = link_next(header(response.headers, "Link"))
        elif c.next_link_path:
            link = dig(response.body, c.next_link_path)
        else:
            link = header(response.headers, c.next_link_header or "")
        if not link or not isinstance(link, str):
            return None
        return PageRequest(urljoin(response.url, link), follow=True)


class OffsetPaginator(Paginator):
    """``offset``: the offset advances by the records received."""

    STATE = (*Paginator.STATE, "offset")

    def default_stops(self) -> list[str]:
        # not short_page: a server that caps the page size would end a full run early, and
        # deletion tracking would then delete the rest; an extra empty page is cheaper
        c = self.config
        return ["empty_page"] + (["total_count"] if c.total_path or c.total_header else [])

    def first(self) -> PageRequest:
        self.offset = self.config.start_offset
        return PageRequest(self.url, {**self.size_params(), self.config.offset_param: str(self.offset)})

    def _next(self, response: PageResponse) -> PageRequest | None:
        self.offset += response.count
        return PageRequest(self.url, {**self.size_params(), self.config.offset_param: str(self.offset)})


class PagePaginator(OffsetPaginator):
    """``page``: page numbers from ``first_page``."""

    STATE = (*Paginator.STATE, "page")

    def first(self) -> PageRequest:
        self.page = self.config.first_page
        return PageRequest(self.url, {**self.size_params(), self.config.page_param: str(self.page)})

    def _next(self, response: PageResponse) -> PageRequest | None:
        self.page += 1
        return PageRequest(self.url, {**self.size_params(), self.config.page_param: str(self.page)})


class CursorPaginator(Paginator):
    """``cursor``: an opaque token from the body or a header, sent back as ``cursor_param``."""

    STATE = (*Paginator.STATE, "cursor")

    def default_stops(self) -> list[str]:
        return ["no_next"]

    def first(self) -> PageRequest:
        self.cursor: str | None = None
        return super().first()

    def _next(self, response: PageResponse) -> PageRequest | None:
        c = self.config
        token = dig(response.body, c.cursor_path) if c.cursor_path else header(response.headers, c.cursor_header or "")
        if token in (None, "", False):
            return None
        token = str(token)
        if token == self.cursor:
            raise BadDataError(
                f"paging cursor did not advance (the server returned the cursor {token[:40]!r} it was "
                "sent); the API ignores cursor_param or paging is misconfigured", location=response.location)
        self.cursor = token
        return PageRequest(self.url, {**self.size_params(), c.cursor_param: token})


class SincePaginator(OffsetPaginator):
    """``since``: the next page is requested with ``since_param`` = the ``_updated`` of the last
    entity received (Sesam's JSON pull protocol: since is exclusive, ``limit`` is the page size)."""

    STATE = Paginator.STATE

    def first(self) -> PageRequest:
        return PageRequest(self.url, self.size_params())

    def _announces(self, total: int) -> int:
        return self.records + total  # a page's total counts from its own since on

    def _next(self, response: PageResponse) -> PageRequest | None:
        if response.last_updated is None:
            raise BadDataError(
                "paging type since: the page's last entity has no _updated; set updated_expression",
                location=response.location)
        return PageRequest(self.url, {**self.size_params(), self.config.since_param: str(response.last_updated)})


_TYPES: dict[str, type[Paginator]] = {
    "none": Paginator, "next_link": LinkPaginator, "link_header": LinkPaginator,
    "offset": OffsetPaginator, "page": PagePaginator, "cursor": CursorPaginator,
    "since": SincePaginator,
}


def paginator_type(config: PagingConfig | None) -> type[Paginator]:
    """The paginator class of a paging config (``none`` when unset)."""
    return _TYPES[(config or PagingConfig()).type]


def make_paginator(config: PagingConfig | None, url: str) -> Paginator:
    """A fresh paginator for one paging sequence starting at ``url``."""
    return paginator_type(config)(config or PagingConfig(), url)


class PageGuard:
    """The safety net of one paging sequence: no request twice, no page repeating the last."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self.last_digest: bytes | None = None

    def request(self, request: PageRequest, location: str) -> None:
        """Record a request about to be sent.

        Raises:
            BadDataError: the same request was sent before in this sequence (a loop).
        """
        key = request.key()
        if key in self.seen:
            raise BadDataError(
                "paging loops: the next page request was already made in this run (a next link or "
                "cursor seen before); check the paging config or the API", location=location)
        self.seen.add(key)

    def page(self, raw_records: bytes, count: int, location: str) -> None:
        """Record a page's records (canonical bytes).

        Raises:
            BadDataError: a non-empty page equal to the previous one (the API ignores paging).
        """
        digest = hashlib.blake2b(raw_records, digest_size=16).digest()
        if count and digest == self.last_digest:
            raise BadDataError(
                "paging returned the same page twice in a row; the API ignores the paging "
                "parameters or paging is misconfigured", location=location)
        self.last_digest = digest
