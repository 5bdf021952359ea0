"""The operators' web console (issue 13), served by the admin API under `/console/`.

Pages are static files (HTML, one script, one style sheet, the message catalogue, and the
vendored Apache ECharts) that hold no data: a page logs in with POST /auth/login and then calls
the JSON API with the log-in's token, like any client. So a page shows exactly what the API
answers that log-in (roles, subtree, audit as for every call) and nothing else; the pages are
public like the Swagger UI's files. docs/architecture.md ("The operators' console") says why.

`ROUTES` are the few JSON routes the pages need that the API lacked (admin_api/console/_routes.py,
_screen.py, _operations.py, _reports.py and, for the card office, approvals and phone pages,
_office.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from litestar import Response
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

from admin_api._auth import PUBLIC
from admin_api.console import _office, _operations, _reports, _routes, _screen

CONSOLE_PATH: Final = "/console"
MOBILE_PATH: Final = "/m"
"""The cardholder's and parent's phone pages (static/m/)."""
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
"""Shipped as package data (pyproject.toml, [tool.setuptools.package-data])."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    # ECharts sets style attributes on its tooltip; no script runs from them.
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


async def _secure(response: Response[Any]) -> Response[Any]:
    """Every console file: loads only our own scripts, never framed, never sniffed."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def console_router() -> Router:
    """The console's files, public: they hold no data (each page asks the API for it with the
    log-in's token). Revalidated on every load, so an upgrade shows at once."""
    return create_static_files_router(
        path=CONSOLE_PATH, directories=[STATIC_DIR], html_mode=True, name="console",
        include_in_schema=False, opt={"permission": PUBLIC}, after_request=_secure,
        cache_control=CacheControlHeader(no_cache=True))


ROUTES = [*_routes.ROUTES, *_screen.ROUTES, *_operations.ROUTES, *_office.ROUTES,
          *_reports.ROUTES]
"""The JSON routes of the console's pages that the API lacked: the card office's search, the
sales and big screen figures and their live streams, the operations status, the card office's,
approvals' and phone pages' reads, the reports' sales by wallet."""


def mobile_router() -> Router:
    """The phone pages under /m/ (static/m/), public like the console's: they log in and ask
    the API's self-service routes (/self/...) for the cardholder's or the children's data."""
    return create_static_files_router(
        path=MOBILE_PATH, directories=[STATIC_DIR / "m"], html_mode=True, name="mobile",
        include_in_schema=False, opt={"permission": PUBLIC}, after_request=_secure,
        cache_control=CacheControlHeader(no_cache=True))


__all__ = ["CONSOLE_PATH", "MOBILE_PATH", "ROUTES", "STATIC_DIR", "console_router",
           "mobile_router"]
