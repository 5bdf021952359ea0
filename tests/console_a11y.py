"""The console's automated accessibility check (issue 13): axe-core in the tests' browser.

`axe_check(page)` runs axe-core (vendored, test-only: admin_api/console/static/vendor/axe-core/)
on the page as it is now, with the WCAG 2.0/2.1 level A and AA rules (colour contrast, labels,
names of buttons and links, image text, ARIA, document title, html lang, ...), and fails
listing every violation. The page never loads axe itself: the test serves the file to the
page from disk at a same-origin address (so the console's Content-Security-Policy,
script-src 'self', is kept as it is in production) and adds the script tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

AXE_JS: Final = (Path(__file__).resolve().parent.parent / "admin_api" / "console" / "static"
                 / "vendor" / "axe-core" / "axe.min.js")
AXE_URL: Final = "/__test__/axe.min.js"
"""Where the page fetches axe from: answered by the test (page.route), never by the server."""
WCAG_TAGS: Final = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")

_RUN = """(tags) => axe.run(document, {runOnly: {type: "tag", values: tags},
                                       resultTypes: ["violations"]})
    .then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + ": "
                                          + n.failureSummary.replace(/\\s+/g, " "))})))"""


def _inject(page: Any) -> None:
    if page.evaluate("typeof window.axe === 'object'"):
        return
    if not getattr(page, "_axe_routed", False):
        source = AXE_JS.read_bytes()
        page.route(f"**{AXE_URL}", lambda route: route.fulfill(
            status=200, body=source, content_type="text/javascript"))
        page._axe_routed = True
    page.add_script_tag(url=AXE_URL)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The WCAG 2 A/AA violations axe finds on the page now (an empty list when none)."""
    _inject(page)
    return list(page.evaluate(_RUN, list(WCAG_TAGS)))


def axe_check(page: Any) -> None:
    """Fail listing every WCAG 2 A/AA violation axe finds on the page as it is now."""
    violations = axe_violations(page)
    lines = [f"{v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"])
             for v in violations]
    assert not violations, f"accessibility violations on {page.url}:\n" + "\n".join(lines)
