"""Errors as RFC 9457 problem details (`application/problem+json`), the same shape everywhere.

    {"type": "https://onecard.example/problems/not-found", "title": "Not found",
     "status": 404, "detail": "no person 17 in your part of the organisation"}

Validation errors add `errors`: [{"field": "amount_fen", "message": "Expected `int` >= 1"}].
A 500 never says more than "internal error" and a request id; the log has the rest.
"""

from __future__ import annotations

import re
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

PROBLEM_BASE: Final = "https://onecard.example/problems/"
MEDIA_TYPE: Final = "application/problem+json"

log = structlog.get_logger("onecard.admin")


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class ProblemBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] = []


class Problem(Exception):
    """Raise to answer with a problem: `Problem(404, "not-found", "no person 17 ...")`."""

    def __init__(self, status: int, slug: str, detail: str = "", *,
                 errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail or slug)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


_TITLES: Final = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    502: "Switch error",
    503: "Switch unavailable",
}
_SLUGS: Final = {
    400: "bad-request", 401: "not-authenticated", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 409: "conflict", 413: "too-large", 415: "unsupported-media-type",
    422: "unprocessable", 429: "too-many-requests", 500: "internal-error",
}


def problem_response(status: int, slug: str, detail: str = "", instance: str = "",
                     errors: list[FieldError] | None = None,
                     headers: dict[str, str] | None = None) -> Response[bytes]:
    body = ProblemBody(type=PROBLEM_BASE + slug, title=_TITLES.get(status, "Error"),
                       status=status, detail=detail, instance=instance, errors=errors or [])
    return Response(content=msgspec.json.encode(body), status_code=status,
                    media_type=MEDIA_TYPE, headers=headers)


_MSGSPEC_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`")


def _one(key: str, message: str) -> FieldError:
    """Name the field as the client wrote it: `items[2].amount_fen`, not Litestar's `data`."""
    path = ""
    m = _MSGSPEC_AT.match(message)
    if m and m.group("path") is not None:
        path, message = m.group("path").lstrip("."), m.group("what")
    elif key != "data":
        path = key
    unknown = _UNKNOWN.match(message)
    if unknown:
        path = f"{path}.{unknown.group('name')}" if path else unknown.group("name")
    return FieldError(field=path or "body", message=message)


def _field_errors(exc: ValidationException) -> list[FieldError]:
    extra = exc.extra
    items = extra if isinstance(extra, list) else [extra] if extra else []
    out = [_one(str(item.get("key", "") or ""), str(item.get("message", "")))
           for item in items if isinstance(item, dict)]
    if not out and exc.detail and " - at `$" in str(exc.detail):
        out.append(_one("", str(exc.detail)))
    return out


def handle_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.slug, exc.detail, request.url.path, exc.errors,
                            exc.headers)


def handle_validation(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ValidationException)
    errors = _field_errors(exc)
    detail = "the request does not match its schema" if errors else str(exc.detail)
    return problem_response(400, "invalid-request", detail, request.url.path, errors)


def handle_http(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    return problem_response(status, _SLUGS.get(status, "error"), str(exc.detail),
                            request.url.path, headers=exc.headers)


def handle_postgres(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Constraint violations the handlers did not foresee are conflicts, not 500s."""
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
        return problem_response(503, "retry", "the change met another one at the same moment "
                                "and was undone; repeat it", request.url.path,
                                headers={"Retry-After": "1"})
    if isinstance(exc, asyncpg.DataError):  # the driver's text names our SQL, not the field
        log.info("admin.data_error", path=request.url.path, error=str(exc).split("\n")[0][:200])
        return problem_response(400, "invalid-request", "a value of the request does not fit "
                                "its field", request.url.path)
    if isinstance(exc, asyncpg.UniqueViolationError):
        return problem_response(409, "conflict", "that already exists: "
                                + (getattr(exc, "constraint_name", "") or "a unique key"),
                                request.url.path)
    if isinstance(exc, (asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError,
                        asyncpg.NotNullViolationError)):
        return problem_response(409, "conflict", "the change breaks a rule of the data: "
                                + (getattr(exc, "constraint_name", "") or "a constraint"),
                                request.url.path)
    return handle_internal(request, exc)


def handle_internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    request_id = request.scope.get("state", {}).get("request_id", "")
    log.error("admin.internal_error", path=request.url.path, method=request.method,
              request_id=request_id, error=repr(exc))
    return problem_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal-error",
                            f"internal error (request id {request_id})", request.url.path)


EXCEPTION_HANDLERS: Final = {
    Problem: handle_problem,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    asyncpg.PostgresError: handle_postgres,
    Exception: handle_internal,
}
