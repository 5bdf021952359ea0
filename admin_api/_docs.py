"""The interactive API docs (`/docs`, Swagger UI) served from our own package: card offices
often run on closed networks, where a page that loads its scripts from a CDN stays blank.

The Swagger UI files come from the `swagger-ui-bundle-v2` wheel (Swagger UI's own dist files and
licence, Apache-2.0) and are served under `/docs/assets/`; the page references nothing else.
"""

from __future__ import annotations

from typing import Final

from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from admin_api._auth import PUBLIC

ASSETS_PATH: Final = "/docs/assets"


def swagger_plugin() -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


def assets_router() -> Router:
    """Swagger UI's files, public (like the page and the OpenAPI document), cached a day."""
    return create_static_files_router(
        path=ASSETS_PATH, directories=[swagger_ui_path], include_in_schema=False,
        opt={"permission": PUBLIC}, cache_control=CacheControlHeader(max_age=86_400))
