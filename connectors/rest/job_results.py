"""One chunk of an asynchronous job's results: its records and the locator of the next chunk
(Salesforce Bulk API 2.0: CSV with ``Sforce-Locator``; Eloqua exports: JSON pages). No I/O.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from connectors.rest.body import parse_body
from connectors.rest.job_models import ResultsStep
from connectors.rest.paging import dig
from connectors.rest.system import Response
from runtime.errors import BadDataError


def chunk_records(step: ResultsStep, response: Response) -> list[dict[str, Any]]:
    """The records of a results response.

    Returns:
        ``csv``: one dict per row, header -> text (every value a string); ``json``: the objects at
        ``payload_property``.

    Raises:
        BadDataError: a CSV row whose field count differs from the header's (naming the line),
            a body that is not UTF-8 or not JSON, or JSON records that are not objects.
    """
    if step.format == "json":
        return _json_records(step, response)
    try:
        text = response.body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadDataError(f"results chunk is not UTF-8 text ({exc})", location=response.location) from exc
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        return []
    records = []
    for row in rows:
        if len(row) != len(header):
            raise BadDataError(f"CSV line {rows.line_num} has {len(row)} fields, the header {len(header)}",
                               location=response.location)
        records.append(dict(zip(header, row, strict=True)))
    return records


def _json_records(step: ResultsStep, response: Response) -> list[dict[str, Any]]:
    data = dig(response.data if response.data is not None else parse_body(response), step.payload_property)
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BadDataError(f"expected a list of objects at payload_property {step.payload_property or '(body)'!r}, "
                           f"got {type(data).__name__}", location=response.location)
    return data


def next_locator(step: ResultsStep, response: Response) -> str | None:
    """The locator of the chunk after ``response``, None when it was the last one (no locator
    configured, absent, empty or one of ``end_locators``)."""
    if step.locator_header:
        value: Any = response.headers.get(step.locator_header)
    elif step.locator_path:
        value = dig(response.data, step.locator_path)
    else:
        return None
    if value is None or str(value) == "" or str(value) in step.end_locators:
        return None
    return str(value)
