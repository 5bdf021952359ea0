"""The Litestar application: routes, the permission guard, request ids, metrics, OpenAPI.

Every route names the permission it needs in `opt["permission"]`: PUBLIC (anyone), "any" (any
log-in), or one of `_auth.ALL_PERMISSIONS`. `create_app` refuses a route that names none, so no
route can be added without a decision about who may call it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from admin_api import (
    _routes_auth,
    _routes_bulk,
    _routes_documents,
    _routes_import,
    _routes_integration,
    _routes_merchants,
    _routes_money,
    _routes_org,
    _routes_people,
    _routes_queries,
    _routes_reports,
    bank,
    settlement,
)
from admin_api import access as _access
from admin_api import console as _console
from admin_api import finance as _finance
from admin_api._auth import ALL_PERMISSIONS, PUBLIC, Actor, LoginLimiter
from admin_api._bodies import JsonBodyRequest
from admin_api._docs import assets_router, swagger_plugin
from admin_api._expiry import run_expiry
from admin_api._money import Money
from admin_api._problems import EXCEPTION_HANDLERS, MEDIA_TYPE, Problem, ProblemBody
from admin_api._routes_reports import report_queries_max
from admin_api._settings import AdminSettings
from admin_api.console._tally import Tallies

VERSION = "0.1.0"
OPENAPI_PATH = "/docs"
REQUEST_BODY_MAX = 2 * 1024 * 1024
"""Bytes of one request body (imports included)."""

log = structlog.get_logger("onecard.admin")


class Metrics:
    """The admin API's own registry: requests by route and status, latency by route."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onecard_admin_requests", "Admin API requests by route template, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.switch_connected = Gauge(
            "onecard_admin_switch_connected",
            "1 while the API's admin terminal is signed on to the switch (money can move)",
            registry=self.registry)
        self.live_streams = Gauge(
            "onecard_admin_live_streams",
            "Live streams (server-sent events) open in this process, against live_streams_max",
            registry=self.registry)
        self.duration = Histogram(
            "onecard_admin_request_duration_seconds", "Admin API request latency by route",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


def request_middleware(metrics: Metrics) -> Any:
    """Request id (X-Request-Id, made here; a client's own is not trusted) and metrics."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request_id = uuid.uuid4().hex[:16]
            scope.setdefault("state", {})["request_id"] = request_id
            status = [500]
            started = time.perf_counter()

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-id", request_id.encode()))
                    message = {**message, "headers": headers}
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                route = scope.get("path_template") or "unmatched"
                metrics.requests.labels(route, scope.get("method", "?"), str(status[0])).inc()
                metrics.duration.labels(route).observe(time.perf_counter() - started)

        return middleware

    return factory


async def permission_guard(connection: ASGIConnection[Any, Any, Any, Any],
                           handler: BaseRouteHandler) -> None:
    """Authenticate (unless PUBLIC) and check the role's permission; the actor goes to state."""
    permission = handler.opt.get("permission")
    if permission == PUBLIC or permission is None:
        return  # None: Litestar's own OPTIONS answer (create_app refuses it on any other route)
    actor = await _routes_auth.actor_of(connection, connection.app.state.pool)
    if permission != "any":
        actor.require(permission)
    connection.state.actor = actor
    structlog.contextvars.bind_contextvars(user=actor.username)


async def provide_actor(request: Request[Any, Any, Any]) -> Actor:
    actor = request.state.get("actor")
    if actor is None:  # a PUBLIC route asked for an actor: a programming error
        raise Problem(401, "not-authenticated", "this route needs a log-in")
    return actor


@get("/healthz", opt={"permission": PUBLIC}, tags=["operations"], include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", opt={"permission": PUBLIC}, tags=["operations"], include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, str]]:
    try:
        await state.pool.fetchval("SELECT 1", timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return Response({"status": "not ready", "reason": type(exc).__name__}, status_code=503)
    return Response({"status": "ready"})


@get("/metrics", opt={"permission": PUBLIC}, tags=["operations"], include_in_schema=False,
     media_type=CONTENT_TYPE_LATEST)
async def metrics_endpoint(state: State) -> bytes:
    return generate_latest(state.metrics.registry)


ROUTES = [
    *_routes_auth.ROUTES, *_routes_org.ROUTES, *_routes_people.ROUTES, *_routes_queries.ROUTES,
    *_routes_merchants.ROUTES, *_routes_reports.ROUTES, *_routes_money.ROUTES,
    *_routes_documents.ROUTES,
    *_routes_import.ROUTES, *_routes_bulk.ROUTES, *_routes_integration.ROUTES,
    *_finance.ROUTES,
    *settlement.ROUTES,
    *_access.ROUTES,
    *bank.ROUTES,
    *_console.ROUTES,
    healthz, readyz, metrics_endpoint,
]


_PROBLEMS = {
    400: "The request does not match its schema (`errors` names each field)",
    401: "No access token, or one that is unknown, expired or revoked",
    403: "The log-in's role may not do this",
    404: "No such object in the log-in's part of the organisation",
    409: "The change conflicts with the state of the data (e.g. a card already issued)",
    415: "The body is not sent as application/json",
    422: "The request is well-formed but breaks a rule (e.g. an eighth level)",
    429: "Too many failed log-ins; Retry-After says when to try again",
    502: "The switch refused or failed the request",
    503: "The switch cannot be reached; nothing was done",
}


def document_problems(handlers: list[Any]) -> None:
    """Every route documents the problems it may answer (RFC 9457, application/problem+json)."""
    for handler in handlers:
        permission = handler.opt.get("permission")
        codes = [400, 401, 429] if permission == PUBLIC else [400, 401, 403, 404, 409, 422]
        if handler.parsed_data_field is not None:
            codes.append(415)
        if handler.opt.get("switch"):
            codes += [502, 503]
        specs = {code: ResponseSpec(ProblemBody, description=_PROBLEMS[code],
                                    media_type=MEDIA_TYPE, generate_examples=False)
                 for code in codes}
        handler.responses = {**specs, **(handler.responses or {})}


def check_permissions(app: Litestar) -> None:
    for route in app.routes:
        if route.path == OPENAPI_PATH or route.path.startswith(OPENAPI_PATH + "/"):
            continue  # the OpenAPI document and its viewer: public, read-only
        for handler in getattr(route, "route_handlers", []):
            if set(handler.http_methods) == {"OPTIONS"} and "permission" not in handler.opt:
                continue  # Litestar's automatic OPTIONS answer: allowed methods, no data
            permission = handler.opt.get("permission")
            if permission not in (PUBLIC, "any") and permission not in ALL_PERMISSIONS:
                raise RuntimeError(f"route {route.path} names no known permission "
                                   f"({permission!r}): every route must say who may call it")


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="OneCard admin API",
        version=VERSION,
        description=(
            "Master data, card lifecycle, counter money, approvals, reports and self-service of "
            "a OneCard site. Authenticate with POST /auth/login and send the token as "
            "`Authorization: Bearer <token>`. Errors are RFC 9457 problem details."
        ),
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer",
                                     description="An access token from POST /auth/login, or an "
                                     "API key (ock_...) from POST /api-keys"),
            "apiKey": SecurityScheme(type="apiKey", name="X-Api-Key", security_scheme_in="header",
                                     description="An API key (ock_...) from POST /api-keys"),
        }),
        security=[{"bearer": []}, {"apiKey": []}],
        path=OPENAPI_PATH,
        render_plugins=[swagger_plugin()],
    )


def create_app(settings: AdminSettings, *, pool: asyncpg.Pool | None = None) -> Litestar:
    """The app. It opens its own PostgreSQL pool at start unless one is given."""
    metrics = Metrics()
    document_problems([h for h in ROUTES if h.include_in_schema])

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = pool is None
        app.state.pool = pool or await asyncpg.create_pool(
            settings.dsn, min_size=1, max_size=settings.pool_max,
            server_settings={"application_name": "onecard-admin"})
        app.state.money = Money(settings, app.state.pool)
        report_queries_max(app.state.pool, settings.report_queries_max)
        metrics.switch_connected.set_function(app.state.money.connected)
        expiry = asyncio.create_task(run_expiry(app.state.pool, settings.expiry_check_seconds),
                                     name="card-expiry")
        access_tasks = asyncio.create_task(_access.run_access_tasks(
            app.state.pool, settings.access_check_seconds), name="access-tasks")
        try:
            await app.state.money.start()
            yield
        finally:
            expiry.cancel()
            access_tasks.cancel()
            await app.state.money.close()
            if own:
                await app.state.pool.close()

    app = Litestar(
        route_handlers=[*ROUTES, assets_router(), _console.console_router(),
                        _console.mobile_router()],
        guards=[permission_guard],
        dependencies={"actor": Provide(provide_actor)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[request_middleware(metrics)],
        request_class=JsonBodyRequest,
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        state=State({"settings": settings, "metrics": metrics, "log": log, "tallies": Tallies(),
                     "login_limiter": LoginLimiter(
                         settings.login_failures_max, settings.login_window_seconds,
                         address_failures_max=settings.login_address_failures_max)}),
        request_max_body_size=REQUEST_BODY_MAX,
        cors_config=CORSConfig(allow_origins=[]),
        debug=False,
    )
    check_permissions(app)
    close_strict_schemas(app)
    return app


def close_strict_schemas(app: Litestar) -> None:
    """A request struct that refuses unknown fields says so in the OpenAPI document
    (`additionalProperties: false`), so clients and schemathesis know."""
    strict: set[str] = set()
    todo = list(msgspec.Struct.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("admin_api.") and cls.__struct_config__.forbid_unknown_fields:
            strict.add(cls.__name__)
    components = app.openapi_schema.components
    for name, schema in (components.schemas or {}).items():
        if name in strict and isinstance(schema, Schema):
            schema.additional_properties = False
