"""`/docs` works on a network without internet: the page references only its own server's
URLs (Swagger UI's script, style sheet, preset and icon come from our package), and each of
them answers 200 with the file."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from onecard.harness import AdminProcess


class _Links(HTMLParser):
    """Every URL the page makes a browser load: src and href attributes, CSS url(...) and
    @import in inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += re.findall(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", data)


@pytest.fixture
def admin(db_dsn: str) -> Iterator[AdminProcess]:
    process = AdminProcess(db_dsn, os.urandom(32).hex()).start()
    try:
        yield process
    finally:
        process.stop()


def test_docs_page_loads_only_same_origin_assets_that_answer(admin: AdminProcess) -> None:
    with httpx.Client(base_url=admin.url, timeout=30) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        links = _Links()
        links.feed(page.text)
        assets = [urljoin(admin.url + "/docs", u) for u in links.urls]
        assert len(assets) >= 4, links.urls  # the script, the preset, the style sheet, the icon
        origin = urlsplit(admin.url)
        for url in assets:
            parts = urlsplit(url)
            assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url
            answer = http.get(url)
            assert answer.status_code == 200 and len(answer.content) > 0, url
        script = http.get("/docs/assets/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in script.content
        assert script.headers["content-type"].split(";")[0] in ("text/javascript",
                                                                "application/javascript")
        # The OpenAPI document beside it is still there.
        assert http.get("/docs/openapi.json").json()["info"]["title"] == "OneCard admin API"
