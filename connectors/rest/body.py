"""Parsing of response bodies, shared by the REST system's retry loop, the source and the transform.

A parse failure is a :class:`BadDataError` naming the request and the attempts made; on a 2xx
response of an idempotent request :meth:`~connectors.rest.system.RestSystem.send` retries it under
the system's ``connection`` rule first (a body cut short or an error page served with status 200
is usually transient), so the error is raised only once those attempts are spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from runtime.errors import BadDataError

if TYPE_CHECKING:
    from connectors.rest.system import Response


def parse_body(response: Response) -> Any:
    """The JSON body of a response.

    Raises:
        BadDataError: empty, HTML (an error page served with status 200) or invalid/truncated JSON.
    """
    body = response.body
    ctype = response.headers.get("Content-Type", "")
    if not body.strip():
        raise BadDataError(f"response body is empty (status {response.status}, content-type "
                           f"{ctype!r}) {_after(response)}; expected JSON", location=response.location)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        head = body.lstrip()[:15].lower()
        if "html" in ctype or head.startswith((b"<!doctype", b"<html", b"<")):
            what = f"an HTML page (status {response.status}), not JSON; the API served an error page"
        else:
            what = f"not valid JSON ({exc}); the body may be truncated ({len(body)} bytes)"
        raise BadDataError(f"response is {what} {_after(response)}", location=response.location) from exc


def content(response: Response) -> Any:
    """The body as JSON when it is JSON, else as text (None when empty).

    Raises:
        BadDataError: the Content-Type says JSON but the body is not valid JSON.
    """
    if not response.body:
        return None
    ctype = response.headers.get("Content-Type", "")
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        if "json" in ctype:
            raise BadDataError(f"response claims {ctype!r} but is not valid JSON ({exc}) {_after(response)}; "
                               "the body may be truncated", location=response.location) from exc
        return response.body.decode("utf-8", "replace")


def _after(response: Response) -> str:
    return f"after {response.attempts} attempt(s)"
