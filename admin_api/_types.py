"""Parameter types shared by the routes: every id fits its column, so no request reaches
PostgreSQL with a number it cannot hold (that would be a 500, not a 400)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

from litestar.params import Parameter
from msgspec import Meta

INT32_MAX: Final = 2**31 - 1
BIG_MAX: Final = 10**18
"""The largest card number or journal position a request may name: it fits a bigint, and
unlike 2^63-1 it survives the OpenAPI document's JSON numbers (doubles) exactly."""


def optional_bounds(ge: int, le: int, description: str) -> Any:
    """The Parameter of an optional bounded int query parameter, used as
    `Annotated[int | None, optional_bounds(0, 99, "...")]` (the None inside: `Annotated[int,
    Parameter(...)] | None` would lose its bounds, Litestar checks none inside a union).
    Litestar checks both bounds, but its OpenAPI document leaves out a `minimum` of 0 (it skips
    a false bound) of an optional int: it is stated again here."""
    return Parameter(ge=ge, le=le, description=description, schema_extra={"minimum": ge})


Id = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="an id (1 .. 2^31-1)")]
OptionalId = Annotated[int | None, optional_bounds(1, INT32_MAX, "an id (1 .. 2^31-1)")]
"""An optional id."""
ClassIdParam = Annotated[int, Parameter(ge=1, le=255, description="an identity class id")]
CardNoParam = Annotated[int, Parameter(ge=1, le=BIG_MAX, description="a card number")]
AfterId = Annotated[int, Parameter(ge=0, le=INT32_MAX,
                                   description="the last id of the previous page; 0 first")]
After = Annotated[int, Parameter(ge=0, le=BIG_MAX,
                                 description="the last id (or lsn) of the previous page; 0 first")]
Limit = Annotated[int, Parameter(ge=1, le=1000, description="items per page (1..1000)")]

IdField = Annotated[int, Meta(ge=1, le=INT32_MAX)]
"""An id in a request body."""


def is_ascii_number(text: str, digits_max: int = 18) -> bool:
    """1 to `digits_max` ASCII digits: what int() of a request's text may be given
    (str.isdigit() also takes "²" and "٣", which int() then refuses or reads as 3)."""
    return 0 < len(text) <= digits_max and text.isascii() and text.isdigit()


# A point in time in a query string: an RFC 3339 date-time with its offset, as text. Typed as a
# datetime, Litestar took "0.5" for a Unix time (schemathesis, 2026-12-02); parse_time turns it
# into a datetime after the pattern has refused everything else.
TimeQuery = Annotated[str | None, Parameter(
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
            r"([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    max_length=40, description="An RFC 3339 date-time with its offset, such as "
    "2026-12-02T08:00:00+08:00")]
"""Optional (Litestar checks no bounds inside a union, so the None is inside, as OptionalId)."""


def parse_time(value: str | None) -> dt.datetime | None:
    """A TimeQuery as a datetime (None stays None); ValueError for a day that does not exist
    (2026-02-30), which the pattern lets through."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.upper().replace(" ", "T").replace("Z", "+00:00"))
