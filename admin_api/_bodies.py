"""JSON request bodies: `application/json` only, decoded strictly, straight into their type.

Litestar on its own decodes a body whatever its Content-Type, into plain Python objects first,
then converts those to the handler's `data` type in lax mode: `"100"` and `1e3` became the
integer 100 and 1000, and a body nested 1,000 deep ran the decoder out of stack (a 500). Here a
handler's body is decoded once, strictly, into its msgspec type, so the OpenAPI document is
exactly what is accepted; every request type refuses unknown fields, so nesting deeper than the
schema stops at the first value of the wrong type, and the decoder's own depth limit is a 400.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.types import Empty

from admin_api._problems import Problem

JSON_MEDIA_TYPE: Final = "application/json"


@cache
def _decoder(annotation: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(annotation, strict=True)


class JsonBodyRequest(Request[Any, Any, Any]):
    """The app's request class (`Litestar(request_class=...)`)."""

    async def json(self) -> Any:
        field = self.route_handler.parsed_data_field
        if field is None or self._json is not Empty:
            return await super().json()
        if self.content_type[0] != JSON_MEDIA_TYPE:
            raise Problem(415, "unsupported-media-type",
                          f"send the body as {JSON_MEDIA_TYPE} (Content-Type)")
        body = await self.body()
        try:
            self._json = _decoder(field.annotation).decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationException(detail=str(exc), extra=[{"key": "data",
                                                               "message": str(exc)}]) from None
        except msgspec.DecodeError as exc:
            raise SerializationException(str(exc)) from None  # Litestar's 400: not JSON
        except RecursionError:
            raise Problem(400, "invalid-request", "the body is nested too deeply") from None
        return self._json
