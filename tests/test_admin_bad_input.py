"""Bad input to the admin API gets a clear 4xx and changes nothing, over real HTTP.

JSON bodies: only application/json (415), decoded strictly into their schema ("100" and 1e3 are
not integers), nested 1,000 deep a 400 (it was a 500, even on the log-in). Ids: bounded in the
OpenAPI document and by the server alike, and a value the database cannot hold never echoes the
driver's message. Downloads: a control character in a title does not break an XLSX file, and a
CSV cell is never a formula. X-Forwarded-For is believed only from the proxies configured.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import openpyxl
import pytest

from admin_api import SettingsError, load_settings
from admin_api._types import optional_bounds
from onecard.harness import AdminProcess
from tests.admin_site import PASSWORD, AdminSite, Api

TABLES = ("people", "accounts", "cards", "audit_log", "change_outbox", "documents",
          "idempotency_keys", "admin_tokens")


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def counts(site: AdminSite) -> dict[str, int]:
    return {t: site.fetch(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES}


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_is_a_400_on_the_log_in_and_behind_it(site: AdminSite) -> None:
    anonymous = site.api(None)
    root = site.api()
    before = counts(site)
    bodies = [
        _deep(1000),  # the whole body
        b'{"username": ' + _deep(1000) + b', "password": "x"}',  # a field's value
        b'{"nested": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}",  # an unknown field
        b'{"username": "root", "password": "' + b"x" * 20 + b'"' + b"}" * 1000,  # junk after
    ]
    for api, path in ((anonymous, "/auth/login"), (root, "/people")):
        for body in bodies:
            r = api.http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, body[:40], r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert counts(site) == before


def test_a_body_must_be_json_and_say_so(site: AdminSite) -> None:
    root = site.api()
    before = counts(site)
    body = b'{"node_id": %d, "name": "Plain Text", "class_id": 2}' % site.tenant_node(1)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                         None):
        headers = {"content-type": content_type} if content_type else {}
        r = root.http.post("/people", content=body, headers=headers)
        assert r.status_code == 415, (content_type, r.text)
        assert r.json()["type"].endswith("/unsupported-media-type")
    r = site.api(None).http.post("/auth/login", content=b'{"username": "root", "password": '
                                 b'"correct horse battery"}', headers={"content-type":
                                                                        "text/plain"})
    assert r.status_code == 415, r.text
    assert counts(site) == before
    r = root.http.post("/people", content=body,
                       headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


def test_integers_are_integers(site: AdminSite) -> None:
    """Not "100", not 1e3, not 100.0: what the schema says is what is taken."""
    root = site.api()
    person = site.fetch("SELECT id FROM people ORDER BY id LIMIT 1")[0]["id"]
    before = counts(site)
    for amount in ('"100"', "1e3", "100.0"):
        r = root.http.post(f"/people/{person}/topups", content=f'{{"amount_fen": {amount}}}',
                           headers={"content-type": "application/json",
                                    "idempotency-key": f"strict-{amount}"})
        assert r.status_code == 400, (amount, r.text)
        assert r.json()["errors"][0]["field"] == "amount_fen", r.text
        r = root.http.post("/documents", content=(
            f'{{"doc_type": "adjustment", "title": "Strict", "lines": [{{"person_id": {person},'
            f' "amount_fen": {amount}}}]}}'), headers={"content-type": "application/json"})
        assert r.status_code == 400, (amount, r.text)
        assert r.json()["errors"][0]["field"] == "lines[0].amount_fen", r.text
    r = root.http.post("/people", content=b'{"node_id": "%d", "name": "A", "class_id": 2}'
                       % site.tenant_node(1), headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "node_id", r.text
    assert counts(site) == before


def _bounded_parameters(document: dict[str, Any]) -> list[tuple[str, str, str, str, int]]:
    """(method, path, name, where, maximum) of every integer parameter; asserts each has both
    bounds."""
    out = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for p in operation.get("parameters", []):
                schema = p["schema"]
                kinds = [schema, *schema.get("oneOf", [])]
                if not any(k.get("type") == "integer" for k in kinds):
                    continue
                bounds = {**schema, **next(k for k in kinds if k.get("type") == "integer")}
                assert "minimum" in bounds and "maximum" in bounds, (method, path, p["name"])
                out.append((method, path, p["name"], p["in"], int(bounds["maximum"])))
    return out


def test_every_id_is_bounded_in_the_document_and_by_the_server(site: AdminSite) -> None:
    root = site.api()
    node = site.tenant_node(1)
    person = root.ok("POST", "/people", {"node_id": node, "name": "Holder", "class_id": 2})
    root.ok("POST", "/users", {"username": "bounded.holder", "password": PASSWORD,
                               "role": "cardholder", "node_id": node,
                               "person_id": person["id"]}, 201)
    holder = site.api("bounded.holder")  # the /self routes are a cardholder's
    document = root.ok("GET", "/docs/openapi.json")
    parameters = _bounded_parameters(document)
    assert len(parameters) > 60
    before = counts(site)
    for method, path, name, where, maximum in parameters:
        # A day in a path is a date (the finance routes); every other path parameter an id.
        path = re.sub(r"\{(business_date|day)\}", "2020-01-02", path)
        url = re.sub(r"\{[^}]+\}", "1", path)
        params = {}
        if where == "path":
            url = path.replace("{" + name + "}", str(maximum + 1))
            url = re.sub(r"\{[^}]+\}", "1", url)
        else:
            params[name] = str(maximum + 1)
        api = holder if path.startswith("/self/") else root
        r = api.http.request(method.upper(), url, params=params,
                             headers={"idempotency-key": "bounded"})
        assert r.status_code == 400, (method, url, name, r.text)
        assert name in {e["field"] for e in r.json()["errors"]}, (method, url, r.text)
    assert counts(site) == before


def test_a_value_the_database_refuses_never_echoes_its_message(site: AdminSite) -> None:
    root = site.api()
    r = root.post("/people", {"node_id": site.tenant_node(1), "name": "Nul\u0000Name",
                              "class_id": 2})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "a value of the request does not fit its field"


def test_downloads_survive_control_characters_and_never_carry_a_formula(site: AdminSite
                                                                        ) -> None:
    """A control character in a title made every XLSX download of it a 500 (XML has none but
    tab, LF and CR); it is shown as U+FFFD. A CSV cell that a spreadsheet would run as a
    formula is quoted."""
    root = site.api()
    person = site.fetch("SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id"
                        " WHERE a.tenant_id = 1 ORDER BY p.id LIMIT 1")[0]["id"]
    for title in ("Bell\x07 and\x1b escape", "=HYPERLINK(\"http://x\")", "@SUM(1)"):
        root.ok("POST", "/documents", {"doc_type": "subsidy_batch", "title": title,
                                       "lines": [{"person_id": person, "amount_fen": 100}]},
                201)
    r = root.get("/documents?format=xlsx")
    assert r.status_code == 200, r.text
    sheet = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True).worksheets[0]
    titles = [row[3] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert "Bell\ufffd and\ufffd escape" in titles
    assert "'=HYPERLINK(\"http://x\")" in titles and "'@SUM(1)" in titles
    r = root.get("/documents?format=csv")
    assert r.status_code == 200
    text = r.content.decode("utf-8-sig")
    assert "Bell\x07 and\x1b escape" in text
    assert "\"'=HYPERLINK(\"\"http://x\"\")\"" in text and ",'@SUM(1)," in text


def _client_ip_of_a_change(url: str, token: str, node: int, name: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/people", json={"node_id": node, "name": name, "class_id": 2},
                      headers={"Authorization": f"Bearer {token}",
                               "X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_x_forwarded_for_is_believed_only_from_the_proxies_configured(site: AdminSite) -> None:
    root = site.api()
    assert site.admin is not None
    node = site.tenant_node(1)
    default = _client_ip_of_a_change(site.admin.url, root.token, node, "Not Forwarded")
    proxied = AdminProcess(site.dsn, site.master.hex(), extra_env={
        "ONECARD_ADMIN_TRUSTED_PROXIES": "127.0.0.1, ::1"}).start()
    try:
        behind = Api(proxied.url, "root")
        forwarded = _client_ip_of_a_change(proxied.url, behind.token, node, "Forwarded")
        behind.close()
    finally:
        proxied.stop()
    rows = {r["entity_id"]: r["client_ip"] for r in site.fetch(
        "SELECT entity_id, client_ip FROM audit_log WHERE action = 'person.create'"
        " AND entity_id = ANY($1::text[])", [default, forwarded])}
    assert rows == {default: "127.0.0.1", forwarded: "203.0.113.7"}


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    env = {"ONECARD_DSN": "postgresql://x/y"}
    assert load_settings(env=env).trusted_proxy_list == []
    s = load_settings(env={**env, "ONECARD_ADMIN_TRUSTED_PROXIES": "10.0.0.5, 192.168.0.0/24"})
    assert s.trusted_proxy_list == ["10.0.0.5", "192.168.0.0/24"]
    with pytest.raises(SettingsError, match=r"trusted_proxies: 'proxy\.example' is neither"):
        load_settings(env={**env, "ONECARD_ADMIN_TRUSTED_PROXIES": "10.0.0.5,proxy.example"})


def test_numbers_in_text_are_ascii_digits(site: AdminSite) -> None:
    """str.isdigit() takes '²' (which int() refuses: a 500) and '٣' (which int() reads as 3):
    a cursor of such digits is not one this API gave out."""
    root = site.api()
    for lsn in ("²", "٣", "1" * 30):
        cursor = base64.urlsafe_b64encode(f"1:{lsn}:0".encode()).decode().rstrip("=")
        r = root.get("/integration/events", params={"cursor": cursor})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "cursor", (lsn, r.text)
    good = base64.urlsafe_b64encode(b"1:0:0").decode().rstrip("=")
    assert root.get("/integration/events", params={"cursor": good}).status_code == 200


def test_a_time_in_a_query_is_an_rfc_3339_date_time_not_a_number(site: AdminSite) -> None:
    """Typed as datetimes, these parameters took "0.5" for a Unix time (schemathesis's coverage
    phase, 2026-12-02): a time in a query is RFC 3339 text with its offset, or 400."""
    root = site.api()
    for path in ("/access/records", "/patrol/report", "/visitors/report"):
        for bad in ("0.5", "1700000000", "2026-12-02", "2026-12-02T08:00:00"):
            r = root.http.request("GET", path, params={"until": bad})
            assert r.status_code == 400, (path, bad, r.text)
            assert "until" in {e["field"] for e in r.json()["errors"]}, (path, r.text)
        r = root.http.request("GET", path, params={"until": "2026-02-30T08:00:00+08:00"})
        assert r.status_code == 422, (path, r.text)  # the pattern fits; the day does not exist
        r = root.http.request("GET", path, params={"since": "2026-12-01T00:00:00+08:00",
                                                   "until": "2026-12-02T08:00:00Z"})
        assert r.status_code == 200, (path, r.text)


def test_an_optional_bounded_int_states_and_checks_a_minimum_of_zero() -> None:
    """admin_api._types.optional_bounds: Litestar leaves `minimum: 0` of an optional int out of
    the OpenAPI document (a false bound); the helper states it, and the server still answers
    400 below it and above the maximum."""
    from litestar import Litestar, get
    from litestar.testing import TestClient

    @get("/n", sync_to_thread=False)
    def n(n: Annotated[int | None, optional_bounds(0, 9, "a digit")] = None) -> str:
        return str(n)

    app = Litestar([n], debug=False)
    [p] = app.openapi_schema.to_schema()["paths"]["/n"]["get"]["parameters"]
    assert (p["schema"]["minimum"], p["schema"]["maximum"]) == (0, 9), p
    with TestClient(app) as client:
        assert [client.get("/n", params=q).status_code for q in (
            {"n": "-1"}, {"n": "10"}, {"n": "0"}, {})] == [400, 400, 200, 200]
