"""Parameter types shared by the routes: every id fits its column, so no request reaches
PostgreSQL with a number it cannot hold (that would be a 500, not a 400)."""

from __future__ import annotations

from typing import Annotated, Final

from litestar.params import Parameter
from msgspec import Meta

INT32_MAX: Final = 2**31 - 1
BIG_MAX: Final = 10**18
"""The largest card number or journal position a request may name: it fits a bigint, and
unlike 2^63-1 it survives the OpenAPI document's JSON numbers (doubles) exactly."""

Id = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="an id (1 .. 2^31-1)")]
OptionalId = Annotated[int | None, Parameter(ge=1, le=INT32_MAX, description="an id (1 .. 2^31-1)")]
"""An optional id (`Id | None` would lose its bounds: Litestar checks none inside a union)."""
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
