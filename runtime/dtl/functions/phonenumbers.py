"""Phone number functions (Sesam ``dtl-functions-phone-numbers.rst``), with Google's
libphonenumber rules (the ``phonenumbers`` package). Phone numbers are URIs in RFC 3966 form
(``tel:+47-22-22-22-22``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import phonenumbers as lib

from runtime.dtl.functions import first, function
from runtime.dtl.values import URI
from runtime.errors import FatalError

_F = lib.PhoneNumberFormat
_FORMATS: dict[str, Callable[[lib.PhoneNumber], str]] = {
    "e164": lambda n: lib.format_number(n, _F.E164).lstrip("+"),
    "national-e164": lambda n: str(n.national_number),
    "national": lambda n: lib.format_number(n, _F.NATIONAL),
    "international": lambda n: lib.format_number(n, _F.INTERNATIONAL),
    "rfc3966": lambda n: lib.format_number(n, _F.RFC3966),
    "isocode": lambda n: lib.region_code_for_number(n) or "",
    "country-code": lambda n: str(n.country_code),
}


def _parse(value: Any, region: str | None) -> lib.PhoneNumber | None:
    if not isinstance(value, str | URI):
        return None
    try:
        return lib.parse(str(value), region)
    except lib.NumberParseException:
        return None


def _each(values: Any, op: Callable[[lib.PhoneNumber], Any], region: str | None) -> Any:
    def take(v: Any) -> Any:
        number = _parse(v, region)
        return None if number is None else op(number)
    if isinstance(values, list):
        return [r for r in map(take, values) if r is not None]
    return take(values)


@function("phonenumber-parse", min_args=1, max_args=2)
def phonenumber_parse(*args: Any) -> Any:
    """``[phonenumber-parse, REGION?, VALUES]``: strings as ``tel:`` URIs; numbers without a
    ``+`` country code are read in REGION (ISO code, e.g. ``NO``); unparseable ones are dropped."""
    region = str(first(args[0])) if len(args) == 2 else None
    return _each(args[-1], lambda n: URI(lib.format_number(n, _F.RFC3966)), region)


@function("phonenumber-format", min_args=2, max_args=2)
def phonenumber_format(fmt: Any, values: Any) -> Any:
    """``[phonenumber-format, FORMAT, VALUES]``: ``tel:`` URIs (or ``+``-strings) as text in
    FORMAT: e164 (no ``+``), national-e164, national, international, rfc3966, isocode,
    country-code.

    Raises:
        FatalError: FORMAT is not one of those.
    """
    name = first(fmt)
    if name not in _FORMATS:
        raise FatalError(f"DTL function phonenumber-format: unknown format {name!r}; "
                         f"use one of {list(_FORMATS)}")
    return _each(values, _FORMATS[name], None)
